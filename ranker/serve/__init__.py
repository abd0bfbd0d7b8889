"""Serving: the student as a search-engine plugin over HTTP (``rank serve``) and its load benchmark."""
