"""What training and evaluation share: data (``data``), the MindSpore context and the model from the
options (``runtime``), a checkpoint's arrays for a built network and the finetuning start (``loading``), and
evaluation (``evaluation``, which never imports the trainer)."""
