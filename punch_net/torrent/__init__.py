"""BitTorrent-like file sharing over libp2p, tracker-less via the DHT.

Pure cores: `metainfo` (canonical encoding, info hash), `names` (safe file names),
`wire` (message codec), `picker` (rarest-first + endgame), `resume` (resume record).
Trio adapters: `storage` (.part files), `catalogue` (share dir index), `service`
(serving pieces), `downloader` (fetching pieces), `manager` (the transfers API fronts use).
"""

PROTOCOL_ID = "/punch/torrent/1.0.0"
NAMESPACE = "punch-torrent"  # servers provide this namespace so clients can list catalogues
PIECE_LENGTH = 65_536
