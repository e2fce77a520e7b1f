"""Backends: RuntimeEndpoint (Tessera's / SGLang's native API) and OpenAI (any /v1 server)."""
