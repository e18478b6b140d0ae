"""Diversity report of a build (``diversity``) and side-by-side comparison of builds (``compare``)."""
