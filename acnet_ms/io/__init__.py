"""File formats read and written below the models: PyTorch ``.pth`` files (:mod:`acnet_ms.io.pth`)."""
