"""external: check and crop the external labelled faces (config ``external``) for training."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Job, Port, Step, layout_port

#: The external faces' crops and labels, as train reads them; only while ``external.folders``
#: names a folder (an empty list leaves them out of train's inputs and command).
EXTERNAL_CROPS = (
    layout_port("external_crops", "crops", "external", help="external faces' crops (.npy)",
                when="external.folders"),
    layout_port("external_labels", "file", "labels", "external.csv",
                help="external faces' labels, by crop row (.csv)", when="external.folders"))

STEP = Step(
    "external", "check and crop the external labelled faces (config external)",
    ("external", "crop", "labels.train_age_bounds"),
    # tracked by the engines, not passed (the step reads the folders from its section): each
    # folder (DVC hashes its photos; Snakemake sees a photo added or removed) and its labels.csv
    inputs=(Port("folders", "external.folders", config="external.folders", listed=True, cli=False),
            Port("folder_labels", "external.folders/labels.csv", config="external.folders",
                 under="labels.csv", listed=True, cli=False)),
    outputs=(EXTERNAL_CROPS[0],
             layout_port("external_index", "crop_index", "external", help="external crop index (.csv)",
                         when="external.folders"),
             EXTERNAL_CROPS[1]),
    options=(layout_port("cache", "file", "cache", "boxes-external",
                         help="detection cache folder of the external faces (and their landmarks)"),),
    modules=("maskpipe.crop.external", "maskpipe.data.external"), local=False, threads=2, gpu=True,
    when="external.folders")


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Check every folder's labels.csv and photos, then crop them as the crop step crops."""
    from maskpipe import devices
    from maskpipe.crop.external import crop_external
    from maskpipe.crop.splits import default_workers
    from maskpipe.data.external import read_folders

    settings, o = cfg["crop"], job.outputs
    faces = read_folders(cfg["external"]["folders"])
    with devices.claim_device(settings["device"]) as device:
        crop_external(faces, o["external_crops"], o["external_index"], o["external_labels"],
                      job.options["cache"], settings, tuple(cfg["labels.train_age_bounds"]),
                      cfg["external"]["masks"], str(device), workers=default_workers())
