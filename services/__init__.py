"""Everything with a socket: API, ingest, gateway, dispatcher, store, settings, CLI."""
