"""`turkclip serve`: a small web app over a photo index (FastAPI + one static page)."""
