"""Names that moved, and where they are now: every module path and name that was public before the package
was laid out by role (0.1.0's development, see CHANGELOG.md) imports again, with a FutureWarning naming its
new place (``docs/models.md``, "Public names").  They go in 0.3.0.

:data:`MOVED` is the table: ``{old module: {new module: "name name old=new ..."}}``.  An old module that
still exists resolves its lost names through ``__getattr__ = moved_attr(__name__)``; one that is gone is made
on import by :class:`MovedFinder` (last on ``sys.meta_path``, so a real module always wins).  The few names
whose function changed shape keep their old one in :mod:`acnet_ms._legacy`.

This module imports nothing of the package and no MindSpore.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

LEGACY = "acnet_ms._legacy"
GOES_IN = "0.3.0"

MOVED = {
    "acnet_ms.checkpoint": {"acnet_ms.io.checkpoint": "META_KEY TMP_FILE read_checkpoint write_checkpoint shapes_of "
                                                      "mismatch",
                            "acnet_ms.engine.loading": "net_state load_pretrained"},
    "acnet_ms.config": {"acnet_ms.config.loader": "suggest defaults check_keys coerce read_yaml load_config "
                                                  "add_options resolve_block resolve conversion_options parse dump"},
    "acnet_ms.data": {"acnet_ms.engine.data": "IMAGE_EXTENSIONS DataSpec cifar_dir inspect check_download "
                                              "check_num_classes workers transforms create_loader remove_image_dump "
                                              "pipeline_error check_class_names"},
    "acnet_ms.demo": {"acnet_ms.demo": "ROOT=PACKAGE_PARENT"},
    "acnet_ms.deploy": {"acnet_ms.convert.export": "EXPORT_FORMATS export_format parse_input_shape graph_path "
                                                   "export_graph trained_size check_int8 calibration_recipe "
                                                   "fit_calibration",
                        "acnet_ms.convert.pipeline": "check_against same_file check_replaceable convert_checkpoint",
                        "acnet_ms.convert.identify": "block_of classes_of resolve_model",
                        LEGACY: "expected_shapes fused_model"},
    "acnet_ms.evaluation": {"acnet_ms.engine.evaluation": "evaluate recorded_options validate eval_setup"},
    "acnet_ms.fold": {"acnet_ms.kinds.identities": "BN_EPS BN_FIELDS fuse_bn embed embed_center sum_branches "
                                                   "bias_as_bn fold_conv_bn identity_kernel avg_kernel "
                                                   "merge_sequential scale_out",
                      "acnet_ms.kinds.acb.fold": "BRANCHES POSITIONS BRANCH_SETS asym_offsets embed_branch fold_acb",
                      "acnet_ms.kinds.dbb.fold": "fold_dbb",
                      "acnet_ms.kinds.orepa.fold": "prior_filter merge_1x1_filter merge_depthwise_pointwise "
                                                   "OREPA_BRANCHES fold_orepa",
                      "acnet_ms.kinds.rep.fold": "fold_rep"},
    "acnet_ms.kinds.base": {"acnet_ms.kinds.table": "ENTRY_POINT_GROUP ENV_VAR register_kind unregister_kind "
                                                    "KindImportError kind_entry_points load_kinds kind_names "
                                                    "block_types get_kind check_recorded_kind check_block"},
    "acnet_ms.kinds.acb": {"acnet_ms.kinds.acb.kind": "MIN_K MAX_K SQUARE_MARKER ACBKind"},
    "acnet_ms.kinds.dbb": {"acnet_ms.kinds.dbb.kind": "ORIGIN_MARKER TORCH_BN_FIELDS rename_torch_state DBBKind",
                           LEGACY: "train_macs"},
    "acnet_ms.kinds.orepa": {"acnet_ms.kinds.orepa.kind": "OREPAKind"},
    "acnet_ms.kinds.rep": {"acnet_ms.kinds.rep.kind": "MARKER RepKind", LEGACY: "mac_ratio"},
    "acnet_ms.layers": {"acnet_ms.kinds.acb.cell": "ACBlock", "acnet_ms.kinds.dbb.cell": "DiverseBranchBlock",
                        "acnet_ms.kinds.orepa.cell": "OREPABlock", "acnet_ms.kinds.rep.cell": "RepBlock",
                        "acnet_ms.reparam.switch": "switch_to_deploy reparam_blocks"},
    "acnet_ms.layers.acb": {"acnet_ms.kinds.acb.cell": "ACBlock", "acnet_ms.kinds.cell": "Kernel",
                            LEGACY: "check_kernel_size=acb_check_kernel_size"},
    "acnet_ms.layers.dbb": {"acnet_ms.kinds.dbb.cell": "PadBatchNorm BNAndPad ConvBN IdentityBasedConv1x1 "
                                                       "FixedAverage AvgBranch SeqBranch Holder merge_1x1_kxk "
                                                       "DiverseBranchBlock"},
    "acnet_ms.layers.geometry": {"acnet_ms.kinds.geometry": "pair pads_of same_pads sub_window block_conv crop "
                                                            "pad_zeros pad_with"},
    "acnet_ms.layers.orepa": {"acnet_ms.kinds.orepa.cell": "TAPS OREPABlock"},
    "acnet_ms.layers.rep": {"acnet_ms.kinds.rep.cell": "keeps_grid Branch RepBlock",
                            LEGACY: "check_kernel_size=rep_check_kernel_size"},
    "acnet_ms.layers.reparam": {"acnet_ms.reparam.switch": "reparam_blocks switch_to_deploy",
                                "acnet_ms.kinds.cell": "refresh_graph param_prefix name_params"},
    "acnet_ms.models.mindcv_repvgg": {"acnet_ms.kinds.repvgg.blocks": "repvgg_blocks block_info repvgg_layout "
                                                                      "to_single_branch repvgg_to_deploy"},
    "acnet_ms.options": {"acnet_ms.config.options": "Option SYSTEM DATA AUG MODEL OPTIM SCHED LOSS AMP OURS LEGACY "
                                                    "SCHEDULERS OPTIMIZERS OPTIONS GROUPS IDENTITY FLAT_BLOCK_KEYS "
                                                    "ALIASES"},
    "acnet_ms.orepa_spec": {"acnet_ms.kinds.orepa.spec": "MARKER BRANCHES INITS EXPAND BRANCH_PARAMS ALL "
                                                         "parse_branches branch_names params internal_channels "
                                                         "branch_shapes initial_arrays generated_kernel"},
    "acnet_ms.quantize": {"acnet_ms.convert.quantize": "CALIB_METHODS DEFAULT_CALIB_SAMPLES QDQ_OPSET QMAX "
                                                       "int8_roundtrip weight_sqnr range_ratios runtime Graph "
                                                       "sibling_checkpoint graph_options score_graph check_method "
                                                       "check_samples calibration_config check_calibration "
                                                       "calibration_batches temporary_path quantize_graph int8_path "
                                                       "MindIRGraph open_graph"},
    "acnet_ms.record": {"acnet_ms.reparam.record": "BuildRecord record_of set_record"},
    "acnet_ms.repvgg_state": {"acnet_ms.kinds.repvgg.state": "BRANCH_CELLS DEPLOY_CELL MARKER branch_entries "
                                                             "entries deploy_entries fold_block",
                              "acnet_ms.reparam.state": "check_blocks fold_blocks=fold_state",
                              LEGACY: "find=repvgg_find"},
    "acnet_ms.runtime": {"acnet_ms.engine.runtime": "Context setup model_kwargs build_model amp_cast_classes "
                                                    "apply_amp fmt_time smallest_input too_small model_input_size "
                                                    "COMMON_SIZES"},
    "acnet_ms.state": {"acnet_ms.reparam.state": "TRAINER_SCALARS trainer_entries network_entries find_blocks "
                                                 "block_prefixes infer_block training_names fold_state "
                                                 "plain_to_blocks fold_bns"},
    "acnet_ms.transform": {"acnet_ms.reparam.transform": "ConvSite subclass_convs trace plan_blocks replace_cell "
                                                         "to_blocks to_fused block_layout block_summary summary_line "
                                                         "acb_layout=block_layout acb_summary=block_summary"},
    "acnet_ms.convert.pipeline": {LEGACY: "expected_shapes fused_model"},
    "acnet_ms.io.checkpoint": {"acnet_ms.engine.loading": "net_state load_pretrained"},
    "acnet_ms.kinds.dbb.kind": {LEGACY: "train_macs"},
    "acnet_ms.kinds.rep.cell": {LEGACY: "check_kernel_size=rep_check_kernel_size"},
    "acnet_ms.kinds.rep.kind": {LEGACY: "mac_ratio"},
    "acnet_ms.kinds.repvgg.state": {LEGACY: "find=repvgg_find",
                                    "acnet_ms.reparam.state": "check_blocks fold_blocks=fold_state"},
    "acnet_ms.foreign": {"acnet_ms.convert.foreign": "SOURCES MapError Unit classes_in identify=pth_source to_mindcv"},
    "acnet_ms.convert.foreign": {"acnet_ms.convert.foreign": "identify=pth_source"},
    "acnet_ms.foreign.originals": {"acnet_ms.convert.foreign.originals": "TORCH_BN Unit MapError Reader orepa_dws "
                                                                         "orepa_kernel OREPA_NAMES OREPA_VGG_NAMES "
                                                                         "orepa_1x1_kernel correlate "
                                                                         "chain_large_kernel read_unit "
                                                                         "torch_bn_to_mindspore dbb_unit repvgg_unit"},
    "acnet_ms.foreign.pipeline": {"acnet_ms.convert.foreign.pipeline": "PTH_SUFFIXES is_pth block_finisher",
                                  "acnet_ms.convert.pipeline": "convert_pth"},
    "acnet_ms.convert.foreign.pipeline": {"acnet_ms.convert.pipeline": "convert_pth"},
    "acnet_ms.msrun": {"acnet_ms.engine.msrun": "Msrun msrun_env check_port_free scheduler_beside running watch "
                                                "InitWatchdog"},
}

#: what a legacy function stands for, in the warning (the old function's successor)
LEGACY_SAYS = {
    "expected_shapes": "acnet_ms.io.checkpoint.shapes_of(acnet_ms.models.factory.uninitialised_model(...))",
    "fused_model": "acnet_ms.create_model(..., deploy=True) and its .acnet.fused_pairs",
    "train_macs": "acnet_ms.get_kind('dbb').macs(...)",
    "mac_ratio": "acnet_ms.get_kind('rep').macs(...)['ratio']",
    "repvgg_find": "acnet_ms.reparam.state.find_blocks(state, native=True)",
    "acb_check_kernel_size": "acnet_ms.kinds.cell.check_kernel_size",
    "rep_check_kernel_size": "acnet_ms.kinds.cell.check_kernel_size(kernel_size, 'RepBlock', minimum=1)",
}


def names_of(old_module):
    """``{old name: (new module, new name)}`` of an old module (empty for one that lost nothing)."""
    out = {}
    for new_module, names in MOVED.get(old_module, {}).items():
        for entry in names.split():
            old, _, new = entry.partition("=")
            out[old] = (new_module, new or old)
    return out


def _place(new_module, new_name):
    return LEGACY_SAYS.get(new_name, new_name) if new_module == LEGACY else f"{new_module}.{new_name}"


def resolve(old_module, name, warn=True, stacklevel=3):
    """The object an old ``old_module.name`` stands for, with a FutureWarning naming its new place (unless
    not ``warn``); AttributeError if that module never had the name."""
    moved = names_of(old_module).get(name)
    if moved is None:
        raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
    if warn:
        warnings.warn(f"{old_module}.{name} has moved: use {_place(*moved)} ({old_module}.{name} goes in "
                      f"{GOES_IN})", FutureWarning, stacklevel=stacklevel)
    return getattr(importlib.import_module(moved[0]), moved[1])


def _import_machinery(frame):
    """Whether ``frame`` is Python's import system (``from package import name`` first asks ``hasattr``
    there, then takes the name in the importer's frame: one warning, not two)."""
    return frame is not None and "importlib._bootstrap" in frame.f_code.co_filename


def moved_attr(module_name):
    """A module ``__getattr__`` resolving the names ``module_name`` lost (:data:`MOVED`)."""
    def __getattr__(name):
        return resolve(module_name, name, warn=not _import_machinery(sys._getframe(1)))
    return __getattr__


def _children(name):
    return any(other.startswith(name + ".") for other in MOVED)


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes the old modules that no longer exist: each warns once on import, naming where its names went,
    and resolves them on access."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=_children(fullname))

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        name = module.__name__
        places = sorted({m for m in MOVED[name] if m != LEGACY})
        module.__doc__ = f"Moved: {name}'s names are in {', '.join(places) or LEGACY}."
        module.__getattr__ = moved_attr(name)
        module.__all__ = sorted(names_of(name))
        if module.__spec__.submodule_search_locations is not None:
            module.__path__ = []
        warnings.warn(f"module {name} has moved: its names are in {', '.join(places) or 'the package'} "
                      f"({name} goes in {GOES_IN})", FutureWarning, stacklevel=2)


def install():
    """Put :class:`MovedFinder` last on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
