"""Runnable pipeline templates, shipped with the package (``papy new NAME --template T``).

    grep        follow a growing file (tail -f) and print the lines that match
    wordcount   count words in a folder of text files: a fan-out and a join
    psc         a parameter sweep with produce / spawn / consume
    remote      the same pipeline on local processes or remote RPyC servers

Each one is a module in three parts (functions, pipeline, options and run) with a
``main(argv)``: run it with ``python -m papy run papy/templates/NAME.py`` from a checkout,
``python -m papy.templates.NAME`` from anywhere, or copy it with ``papy new`` and edit it.
"""
