"""Reading YAML configs."""
import os

from .cli import UserError


def read_yaml(path):
    """The mapping stored in YAML file ``path``; UserError naming the file otherwise."""
    import yaml

    if not os.path.isfile(path):
        raise UserError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of option: value, got {type(data).__name__}")
    return data
