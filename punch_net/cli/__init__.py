"""`punch`: the headless command line: flags, config, and rendering events for humans."""
