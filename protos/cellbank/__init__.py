"""The generated contracts, `cellbank.<context>.v1` (make protos); only this file is written by hand.

A regular package rather than a namespace one: `pip install -e .` then maps it to this folder
with a plain path, where a namespace package would get setuptools' placeholder entry in its
`__path__` (and on sys.path), which is not a folder.
"""
