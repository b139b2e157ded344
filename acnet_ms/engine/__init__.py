"""What training and evaluation share: data (``data``), the MindSpore context and the model from the
options (``runtime``), and evaluation (``evaluation``, which never imports the trainer)."""
