"""What the sweep runs each MindCV model with: the batch, input sizes, tolerance, and the recipe
(AMP level and optimizer) of the model's MindCV family.

The recipes are data read from MindCV's own recipe files (``RECIPES_SOURCE``);
the sweep's worker takes a model's level and optimizer from here, and its
report prints the table.  No MindSpore import at module level.
"""

NUM_CLASSES = 10
BATCH = 2
SIZES = (64, 224, 299)  # tried in order: the first the stock model trains at is used (vgg: 224, inception_v3: 299)
TOL = 1e-4  # logits: max |stock - block model| over max(1, largest |logit|), as the tests' assert_close
# a logits difference above TOL is float32's, not the fold's, when the sites are exact (within TOL) and it is at
# most this many times what errors of the sites' measured size at every block output move the logits
ROUNDING_FACTOR = 10
LR = 0.01

#: where the recipe table comes from
RECIPES_SOURCE = ("MindCV's Ascend recipes, `configs/<family>/*_ascend.yaml` of mindspore-lab/mindcv "
                  "(commit 51b0636, July 2025)")
#: MindCV module (family) -> (amp_level, opt) of its recipes; the level most of the family's recipes use
FAMILY_RECIPES = {
    "bit": ("O0", "sgd"), "cmt": ("O2", "adamw"), "coat": ("O2", "adamw"), "convit": ("O2", "adamw"),
    "convnext": ("O2", "adamw"), "crossvit": ("O3", "adamw"), "densenet": ("O2", "momentum"),
    "dpn": ("O2", "sgd"), "edgenext": ("O2", "adamw"), "efficientnet": ("O2", "rmsprop"),
    "ghostnet": ("O3", "momentum"), "googlenet": ("O0", "momentum"), "halonet": ("O3", "adamw"),
    "hrnet": ("O2", "adamw"), "inceptionv3": ("O0", "momentum"), "inceptionv4": ("O2", "momentum"),
    "mixnet": ("O3", "momentum"), "mnasnet": ("O0", "rmsprop"), "mobilenetv1": ("O2", "momentum"),
    "mobilenetv2": ("O3", "momentum"), "mobilenetv3": ("O3", "momentum"), "mobilevit": ("O3", "adamw"),
    "nasnet": ("O0", "rmsprop"), "pit": ("O2", "adamw"), "poolformer": ("O3", "adamw"), "pvt": ("O2", "adamw"),
    "pvtv2": ("O2", "adamw"), "regnet": ("O2", "momentum"), "repmlp": ("O2", "adamw"),
    "repvgg": ("O0", "momentum"), "res2net": ("O3", "momentum"), "resnest": ("O2", "momentum"),
    "resnet": ("O2", "momentum"), "resnetv2": ("O2", "momentum"), "rexnet": ("O2", "sgd"),
    "senet": ("O2", "momentum"), "shufflenetv1": ("O0", "momentum"), "shufflenetv2": ("O3", "momentum"),
    "sknet": ("O2", "momentum"), "squeezenet": ("O0", "momentum"), "swintransformer": ("O2", "adamw"),
    "swintransformerv2": ("O2", "adamw"), "vgg": ("O2", "momentum"), "visformer": ("O3", "adamw"),
    "vit": ("O2", "adamw"), "volo": ("O3", "adamw"), "xception": ("O2", "sgd"), "xcit": ("O2", "adamw"),
}
#: models whose own recipe differs from their family's
MODEL_RECIPES = {
    "coat_mini": ("O2", "lion"), "coat_tiny": ("O2", "lion"), "crossvit_9": ("O2", "adamw"),
    "edgenext_small": ("O3", "adamw"), "edgenext_x_small": ("O3", "adamw"),
    "mnasnet_050": ("O3", "rmsprop"), "mnasnet_130": ("O3", "rmsprop"), "regnet_x_800mf": ("O3", "momentum"),
    "repvgg_b1g2": ("O2", "momentum"), "repvgg_b1g4": ("O2", "momentum"), "repvgg_b2g4": ("O2", "momentum"),
    "squeezenet1_1": ("O2", "momentum"),
}
#: families without a recipe (cait, mae, mlpmixer, pnasnet): O2, the level most of MindCV's Ascend recipes use
DEFAULT_RECIPE = ("O2", "momentum")


def recipe_for(name, family):
    """(amp_level, opt) of ``name``: its own recipe's where it differs from its family's, else the family's."""
    return MODEL_RECIPES.get(name) or FAMILY_RECIPES.get(family) or DEFAULT_RECIPE


def families():
    """MindCV model name -> its family (the MindCV module that defines it)."""
    from mindcv.models.registry import list_models, list_modules

    return {model: module for module in list_modules() for model in list_models(module=module)}
