"""Web: the FastAPI app (JSON API and chat page) over the answering stage."""
