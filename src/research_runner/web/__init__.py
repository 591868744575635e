"""`research web`: read and search every job, batch and schedule in a browser (Starlette + Jinja2, no JS build)."""
