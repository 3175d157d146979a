"""The vault's HTTP face (aiohttp): the app, the problem documents, the OpenAPI document."""
