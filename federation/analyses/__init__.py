"""Hail analyses run inside a national node. The only package that imports hail.

Each module takes a MatrixTable (or a path to one) and returns a Table; `session.py` is the
one place where Hail is initialised.
"""
