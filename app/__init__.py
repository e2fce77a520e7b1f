"""The API process: FastAPI app, OpenAI and native routes, engine supervisor, metrics, admin console."""
