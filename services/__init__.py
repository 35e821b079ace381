"""Everything with a socket: API, ingest, JT/T 808 gateway, Redis view, settings, CLI."""
