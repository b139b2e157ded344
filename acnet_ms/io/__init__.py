"""Files: checkpoint reading and atomic writing (:mod:`.checkpoint`); PyTorch ``.pth`` files read without
torch and without running pickled code (:mod:`.pth`)."""
