"""Bitcoin Core's JSON-RPC over HTTP: the protocol rules, the methods, authentication and the
aiohttp server."""
