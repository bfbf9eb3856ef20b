"""Reusable widgets: a filterable, sortable table and a bounded, virtualised log."""
