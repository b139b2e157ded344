"""The programs behind the entry scripts: ``train``, ``validate``, ``convert``, ``analyze``.

Each module's ``main(argv)`` is the program (its docstring the ``--help``
text); ``train.py``, ``validate.py``, ``convert.py`` and ``analyze.py`` at
the checkout's root only call it, and ``python -m acnet_ms.apps.<name>`` runs
it where the package is installed (``python -m acnet_ms.demo`` and
``python -m acnet_ms.study`` do).
"""
