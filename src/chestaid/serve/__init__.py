"""The triage web page (Gradio) and its HTTP API."""
