from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image

from conftest import every_group, link_real_faces

from maskpipe.crop import (BoxCache, CropGeometry, DetectionPass, DetectorSettings, crop_region,
                           crop_split, detect_boxes, make_detector)
from maskpipe.crop import SOURCES
from maskpipe.crop.detect import BOX_COLUMNS
from maskpipe.images import read_rgb
from maskpipe.io import sha256_file


@pytest.fixture(scope="module")
def detector():
    return make_detector(DetectorSettings(detect_scale=0.5, min_face_size=60), "cpu")


@pytest.fixture(scope="module")
def portrait():
    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def test_batches_with_mixed_sizes_and_a_faceless_image(detector, portrait):
    blank = Image.new("RGB", portrait.size, (120, 160, 200))
    small = portrait.resize((384, 450))
    out = detect_boxes([portrait, blank, small], detector, scale=0.5)
    assert out[1][0] is None and np.isnan(out[1][1])
    for (box, prob), im in ((out[0], portrait), (out[2], small)):
        assert box.dtype == np.float64 and box.shape == (4,)
        assert prob > 0.9
        x1, y1, x2, y2 = box
        w, h = im.size
        # the face sits in the upper middle of the photo, in full-resolution coordinates
        assert 0.2 * w < (x1 + x2) / 2 < 0.8 * w and 0.1 * h < (y1 + y2) / 2 < 0.6 * h
    # boxes scale with the image: the same face in a smaller copy gives a proportional box
    ratio = 384 / portrait.size[0]
    assert np.allclose(out[2][0][[0, 2]], out[0][0][[0, 2]] * ratio, atol=12)


def test_crop_region_grows_margin_and_keeps_aspect():
    region = crop_region(np.array([100.0, 100.0, 200.0, 200.0]), margin=0.25, aspect=1.2)
    w, h = region[2] - region[0], region[3] - region[1]
    assert w == pytest.approx(150) and h == pytest.approx(180)
    assert (region[0] + region[2]) / 2 == pytest.approx(150)


def test_read_rgb_converts_rgba_grayscale_and_cmyk(tmp_path, portrait):
    rgba = portrait.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "a.png")
    portrait.convert("L").save(tmp_path / "g.png")
    portrait.convert("CMYK").save(tmp_path / "c.jpg")
    for name in ("a.png", "g.png", "c.jpg"):
        im = read_rgb(tmp_path / name)
        assert im.mode == "RGB" and im.size == portrait.size


def _manifest(tmp_path, images):
    rows = []
    for i, im in enumerate(images):
        p = tmp_path / f"img{i}.png"
        im.save(p)
        rows.append({"key": f"k{i}", "path": p.name, "sha256": sha256_file(p)})
    return pd.DataFrame(rows)


def test_cache_hits_skip_detection_and_leave_files_untouched(tmp_path, portrait, detector):
    blank = Image.new("RGB", (300, 400), (30, 30, 30))
    manifest = _manifest(tmp_path, [portrait, blank, portrait.convert("L").convert("RGB")])
    settings = DetectorSettings(0.5, 60)
    geometry = CropGeometry(48, 40, 0.2)
    npy, index = tmp_path / "out" / "x.npy", tmp_path / "out" / "x.csv"
    calls = []

    def factory():
        calls.append(1)
        return detector

    def run(factory):
        return crop_split(manifest, tmp_path, npy, index, geometry,
                          [DetectionPass(settings, BoxCache(tmp_path / "cache", settings), factory)], batch_size=2)

    idx = run(factory)
    assert calls == [1]
    assert list(idx["source"]) == ["detected", "fallback", "detected"]
    arr = np.load(npy)
    assert arr.shape == (3, 48, 40, 3) and arr.dtype == np.uint8
    stamp = (npy.stat().st_mtime_ns, index.stat().st_mtime_ns)

    def no_detector():
        raise AssertionError("a cached image was detected again")

    run(no_detector)
    assert (npy.stat().st_mtime_ns, index.stat().st_mtime_ns) == stamp

    # a new margin re-crops (different pixels) but does not detect again: boxes are cached
    geometry = CropGeometry(48, 40, 0.5)
    run(no_detector)
    assert not np.array_equal(np.load(npy), arr)


def test_eval_is_cropped_like_train(tiny_run):
    _, L = tiny_run
    train, ev = np.load(L.crops("train"), mmap_mode="r"), np.load(L.crops("eval"), mmap_mode="r")
    assert train.shape[1:] == ev.shape[1:] == (40, 32, 3)
    index = pd.read_csv(L.crop_index("train"))
    assert set(index["source"]) <= set(SOURCES)
    assert (index["row"] == np.arange(len(index))).all()


def test_person_fallback_uses_the_persons_detected_photos(tmp_path, portrait, detector):
    from PIL import ImageDraw

    hidden = portrait.copy()
    ImageDraw.Draw(hidden).rectangle((0, 0, portrait.size[0], portrait.size[1] * 2 // 3), fill=(90, 90, 90))
    faceless = Image.new("RGB", portrait.size, (10, 200, 10))
    manifest = _manifest(tmp_path, [portrait, hidden, faceless])
    manifest["person"] = ["p1", "p1", "p2"]
    settings, geometry = DetectorSettings(0.5, 60), CropGeometry(48, 40, 0.2)
    idx = crop_split(manifest, tmp_path, tmp_path / "x.npy", tmp_path / "x.csv", geometry,
                     [DetectionPass(settings, BoxCache(tmp_path / "cache", settings), lambda: detector)], batch_size=1)
    assert list(idx["source"]) == ["detected", "person", "fallback"]
    # the person's hidden photo is cropped where the face was found in its other photo
    assert np.allclose(idx.loc[0, ["x1", "y1", "x2", "y2"]].to_numpy(float),
                       idx.loc[1, ["x1", "y1", "x2", "y2"]].to_numpy(float))
    # (batch_size=1 did not split person p1's photos over two chunks: that would lose the box)
    assert pd.read_csv(tmp_path / "x.csv")["source"].tolist() == list(idx["source"])


def test_workers_make_the_same_crops(tmp_path, portrait, caplog):
    """Chunks cropped 2 at a time (threads, one torch thread each) equal one at a time, in order."""
    import functools

    from PIL import ImageOps

    from maskpipe.crop import make_detector

    images = [portrait, Image.new("RGB", portrait.size, (40, 40, 40)), ImageOps.mirror(portrait),
              portrait.rotate(8), portrait.resize((portrait.size[0] // 2, portrait.size[1] // 2))]
    manifest = _manifest(tmp_path, images)
    manifest["person"] = ["p1", "p1", "p2", "p3", "p4"]  # 4 chunks
    settings, geometry = DetectorSettings(0.5, 60), CropGeometry(48, 40, 0.2)
    factory = functools.partial(make_detector, settings, "cpu")
    out = {}
    caplog.set_level("DEBUG", logger="maskpipe.crop.splits")
    for workers in (1, 2):
        d = tmp_path / f"w{workers}"
        idx = crop_split(manifest, tmp_path, d / "x.npy", d / "x.csv", geometry,
                         [DetectionPass(settings, BoxCache(d / "cache", settings), factory)],
                         batch_size=1, workers=workers)
        out[workers] = (np.load(d / "x.npy"), idx, (d / "cache").iterdir().__next__().read_bytes())
    assert "crop: 4 chunks on 2 threads" in caplog.text
    assert list(out[1][1]["source"]) == ["detected", "person", "detected", "detected", "detected"]
    assert np.array_equal(out[1][0], out[2][0])
    pd.testing.assert_frame_equal(out[1][1], out[2][1])
    assert out[1][2] == out[2][2]  # the same detections cached


def test_detection_cache_key_covers_settings_code_and_libraries(tmp_path, monkeypatch):
    """Cached boxes are reused only by the same settings, detection code and library versions."""

    from maskpipe.crop import detect

    base = DetectorSettings(0.5, 120).key()
    assert DetectorSettings(0.5, 100).key() != base
    assert DetectorSettings(0.5, 120, (0.6, 0.7, 0.8)).key() != base
    edited = tmp_path / "detect.py"
    edited.write_bytes(Path(detect.__file__).read_bytes() + b"\n# an edit\n")
    detect.detector_fingerprint.cache_clear()
    monkeypatch.setattr(detect, "__file__", str(edited))
    try:
        assert DetectorSettings(0.5, 120).key() != base  # an edit to the detection code re-detects
    finally:
        monkeypatch.undo()
        detect.detector_fingerprint.cache_clear()
    assert DetectorSettings(0.5, 120).key() == base


def test_default_workers_follow_the_jobs_cpu_budget(monkeypatch):
    """Snakemake sets OMP_NUM_THREADS to a rule's threads: the crop step stays within it."""
    import os

    from maskpipe.crop.splits import default_workers

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_workers() == cores + 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_workers() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "999")
    assert default_workers() == cores + 1


def test_an_image_in_two_chunks_gets_one_box_and_reruns_from_the_cache_unchanged(tmp_path, portrait):
    """The same photo in two persons' folders is detected once (MTCNN's boxes depend a little on
    the batch), so a rerun from the cache rewrites nothing; a broken image fails the step in one
    line and leaves no thread waiting."""
    import functools

    from PIL import ImageOps

    from maskpipe.crop import make_detector
    from maskpipe.io import MaskpipeError

    others = [ImageOps.mirror(portrait), portrait.rotate(6), portrait.rotate(-6)]
    manifest = _manifest(tmp_path, [portrait, *others])
    manifest = pd.concat([manifest, manifest.iloc[[0]].assign(key="dup")], ignore_index=True)
    manifest["person"] = ["p1", "p2", "p3", "p4", "p5"]  # the copy is alone in the last chunk
    settings, geometry = DetectorSettings(0.5, 60), CropGeometry(48, 40, 0.2)
    factory = functools.partial(make_detector, settings, "cpu")
    npy, index = tmp_path / "out" / "x.npy", tmp_path / "out" / "x.csv"

    def run():
        return crop_split(manifest, tmp_path, npy, index, geometry,
                          [DetectionPass(settings, BoxCache(tmp_path / "cache", settings), factory)],
                          batch_size=1, workers=3)

    idx = run()
    assert idx.loc[0, BOX_COLUMNS].tolist() == idx.loc[4, BOX_COLUMNS].tolist()
    crops = np.load(npy)
    assert np.array_equal(crops[0], crops[4])
    stamp = npy.stat().st_mtime_ns
    run()
    assert npy.stat().st_mtime_ns == stamp

    (tmp_path / manifest.loc[1, "path"]).write_bytes(b"not an image")
    with pytest.raises(MaskpipeError, match="unreadable image"):
        run()
    assert npy.stat().st_mtime_ns == stamp

    # The detection of the shared image fails: the chunk waiting for its box fails too, no hang.
    import threading

    class Broken:
        def detect(self, images):
            raise RuntimeError("detector broke")

    manifest = manifest.drop(index=1)
    errors = []

    def broken_run():
        try:
            crop_split(manifest, tmp_path, npy, index, geometry,
                       [DetectionPass(settings, BoxCache(tmp_path / "empty-cache", settings), Broken)],
                       batch_size=1, workers=3)
        except RuntimeError as e:
            errors.append(str(e))

    thread = threading.Thread(target=broken_run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and errors == ["detector broke"]
    assert npy.stat().st_mtime_ns == stamp


class FakeDetector:
    """MTCNN's ``detect()`` contract with boxes chosen by the test: a face wherever an image's top
    left pixel has a colour in ``faces`` (colour -> box at full size, scaled by ``detect_scale``)."""

    def __init__(self, faces: dict, scale: float = 0.5):
        self.faces, self.scale, self.calls = faces, scale, 0

    def detect(self, images):
        self.calls += 1
        boxes, probs = [], []
        for im in images:
            box = self.faces.get(im.getpixel((0, 0)))
            boxes.append(None if box is None else np.array([np.asarray(box, float) * self.scale], dtype=object))
            probs.append(None if box is None else np.array([0.9]))
        return boxes, probs


def _photo(colour, face=None, size=(120, 160)):
    """A flat photo of ``colour`` (its top left pixel names it to FakeDetector), with a grey face."""
    from PIL import ImageDraw

    im = Image.new("RGB", size, colour)
    if face is not None:
        ImageDraw.Draw(im).rectangle(tuple(face), fill=(128, 128, 128))
    return im


def _passes(tmp_path, first: dict, second: dict | None):
    """A first pass (FakeDetector of ``first``) and, unless None, a second, with their caches."""
    out = []
    for k, faces in enumerate([first] + ([second] if second is not None else [])):
        settings = DetectorSettings(0.5, 60 - 20 * k)
        det = FakeDetector(faces)
        out.append((DetectionPass(settings, BoxCache(tmp_path / "cache", settings), lambda d=det: d), det))
    return [p for p, _ in out], [d for _, d in out]


def test_second_pass_finds_what_the_first_missed_and_must_agree_with_the_person(tmp_path):
    """Photos the first pass misses go to the second; its box is kept where it overlaps the
    person's first-pass box (or the person has none), else the person's box is used. Both passes
    are cached under their own settings: a rerun detects nothing."""
    face = (30, 40, 90, 120)
    colours = [(200, 0, 0), (201, 0, 0), (202, 0, 0), (0, 0, 200), (0, 0, 201)]
    manifest = _manifest(tmp_path, [_photo(c, face) for c in colours])
    manifest["person"] = ["p1", "p1", "p1", "p2", "p2"]
    first = {(200, 0, 0): face}
    second = {(201, 0, 0): (32, 42, 92, 122),  # agrees with p1's box: kept
              (202, 0, 0): (0, 0, 20, 20),  # a box on something else: p1's box instead
              (0, 0, 200): (30, 40, 90, 120)}  # p2 has no first-pass box: kept
    passes, dets = _passes(tmp_path, first, second)
    geometry = CropGeometry(48, 40, 0.2)
    idx = crop_split(manifest, tmp_path, tmp_path / "x.npy", tmp_path / "x.csv", geometry, passes, batch_size=8)
    assert list(idx["source"]) == ["detected", "second_pass", "person", "second_pass", "person"]
    assert list(idx["shoot"]) == ["p1", "p1", "p1", "p2", "p2"]
    boxes = idx[BOX_COLUMNS].to_numpy(float)
    assert np.allclose(boxes[2], boxes[0]) and not np.allclose(boxes[1], boxes[0])
    assert np.allclose(boxes[4], boxes[3])  # p2's photo without any box: p2's second-pass box
    assert idx["prob"].notna().tolist() == [True, True, False, True, False]
    assert [d.calls for d in dets] == [1, 1]
    # The second pass saw only the first's misses; each pass has its own cache file.
    assert len(list((tmp_path / "cache").glob("*.csv"))) == 2
    passes, dets = _passes(tmp_path, {}, {})
    again = crop_split(manifest, tmp_path, tmp_path / "x.npy", tmp_path / "x.csv", geometry, passes, batch_size=8)
    assert [d.calls for d in dets] == [0, 0]
    pd.testing.assert_frame_equal(again, idx)


def test_eval_photos_take_their_shoots_box(tmp_path):
    """Eval photos (no person) that look alike form a shoot: a photo without a face found takes
    the median box of its shoot's detected photos; a photo like no other gets the fixed region.
    The crops equal those of a run on one worker, and the index names each photo's shoot."""
    from maskpipe.crop import Placement, ShootGrouping

    shoot_a = [(200, 30, 30), (201, 30, 30), (202, 30, 30)]
    shoot_b = [(30, 30, 200), (30, 30, 201), (30, 30, 202)]
    lonely = (30, 200, 30)
    colours = [shoot_a[0], shoot_b[0], lonely, shoot_a[1], shoot_b[1], shoot_a[2], shoot_b[2]]
    manifest = _manifest(tmp_path, [_photo(c, (30, 40, 90, 120)) for c in colours])
    first = {shoot_a[0]: (30, 40, 90, 120), shoot_a[1]: (34, 44, 94, 124),
             shoot_b[0]: (10, 20, 70, 100)}
    place = Placement(0.5, ShootGrouping(max_distance=0.05, neighbours=4))
    geometry = CropGeometry(48, 40, 0.2)
    out = {}
    for workers in (1, 3):
        passes, _ = _passes(tmp_path / f"w{workers}", first, None)
        d = tmp_path / f"w{workers}"
        out[workers] = crop_split(manifest, tmp_path, d / "x.npy", d / "x.csv", geometry, passes,
                                  batch_size=2, workers=workers, place=place), np.load(d / "x.npy")
    idx, crops = out[1]
    assert list(idx["source"]) == ["detected", "detected", "fallback", "detected", "shoot", "shoot", "shoot"]
    assert list(idx["shoot"]) == ["shoot00000", "shoot00001", "shoot00002", "shoot00000", "shoot00001",
                                  "shoot00000", "shoot00001"]
    boxes = idx[BOX_COLUMNS].to_numpy(float)
    median_a = crop_region(np.median([first[shoot_a[0]], first[shoot_a[1]]], axis=0), 0.2, 48 / 40)
    assert np.allclose(boxes[5], median_a.round(2))
    assert np.allclose(boxes[4], boxes[1]) and np.allclose(boxes[6], boxes[1])
    from maskpipe.crop import cut

    for i in (2, 4):  # placed after the shoots were known: cut from their own photos
        photo = read_rgb(tmp_path / manifest.loc[i, "path"])
        assert np.array_equal(crops[i], cut(photo, boxes[i], 48, 40))
    pd.testing.assert_frame_equal(out[3][0], idx)
    assert np.array_equal(out[3][1], crops)
    # Without shoots, the same photos get the fixed region and no shoot name.
    passes, _ = _passes(tmp_path / "w1", first, None)
    alone = crop_split(manifest, tmp_path, tmp_path / "y.npy", tmp_path / "y.csv", geometry, passes,
                       batch_size=2, place=Placement(0.5, None))
    assert list(alone["source"]) == ["detected", "detected", "fallback", "detected", "fallback",
                                     "fallback", "fallback"]
    assert (alone["shoot"] == "").all()


def test_group_shoots_numbers_shoots_by_first_photo_and_keeps_strangers_apart():
    from maskpipe.crop import ShootGrouping, group_shoots

    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, size=(3, 48))
    order = [2, 0, 2, 1, 0, 2, 1, 0]
    looks = centres[order] + rng.normal(0, 0.01, size=(len(order), 48))
    stranger = np.full((1, 48), 0.5)
    looks = np.vstack([looks, stranger]).astype(np.float32)
    labels = group_shoots(looks, ShootGrouping(max_distance=0.05, neighbours=6))
    assert labels.tolist() == [0, 1, 0, 2, 1, 0, 2, 1, 3]
    assert np.array_equal(group_shoots(looks, ShootGrouping(0.05, 6)), labels)
    # A threshold below the photos' own differences leaves every photo alone.
    assert sorted(group_shoots(looks, ShootGrouping(0.001, 6)).tolist()) == list(range(9))
    assert group_shoots(looks[:1], ShootGrouping()).tolist() == [0]


def test_detector_passes_follow_the_config_and_key_their_caches(shipped_config):
    """The second pass's settings come from crop.second_pass (the first pass's other fields carry
    over); every field is in its cache key; disabled, there is one pass."""
    import copy

    from maskpipe.config import validate
    from maskpipe.crop import detector_passes
    from maskpipe.crop.splits import placement

    crop = validate(copy.deepcopy(shipped_config))["crop"]
    first, second = detector_passes(crop)
    assert first == DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    assert second.thresholds == tuple(crop["second_pass"]["thresholds"]) and second.key() != first.key()
    assert placement(crop).min_iou == crop["second_pass"]["min_iou"]
    assert placement(crop).shoots.max_distance == crop["shoots"]["max_distance"]
    crop["second_pass"].update(detect_scale=crop["detect_scale"], min_face_size=crop["min_face_size"],
                               thresholds=crop["thresholds"])
    assert detector_passes(crop) == [first]  # a second pass like the first would find nothing new
    crop["second_pass"]["enabled"] = crop["shoots"]["enabled"] = False
    assert detector_passes(crop) == [first] and placement(crop).shoots is None


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    """A tiny realistic set (demo-data --faces: 6 train and 4 eval persons of real faces), read
    from the shared folder through symlinks (the faces are research-only: never copied)."""
    from maskpipe.demo.realfaces import generate_realfaces

    faces = link_real_faces(tmp_path_factory.mktemp("faces"), every_group(6))
    root = tmp_path_factory.mktemp("real") / "data"
    generate_realfaces(root, faces, persons=6, eval_persons=4, seed=0)
    return root


def test_real_faces_eval_photos_are_cropped_like_train(real_set, tmp_path, shipped_config):
    """On real faces with drawn masks, with the shipped crop settings: every train photo and at
    least 95% of eval photos get a box found on their own face or their shoot's, and every eval
    shoot holds photos of one person only."""
    import copy

    import yaml
    from conftest import shrink

    from maskpipe.config import validate
    from maskpipe.dag.jobs import resolve
    from maskpipe.dag.runner import run_job
    from maskpipe.dag.table import STEPS
    from maskpipe.layout import Layout

    cfg = shrink(copy.deepcopy(shipped_config), real_set, results=str(tmp_path / "results"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    L = Layout(cfg["results"])
    for step in ("validate", "crop"):  # with the arguments the engines pass (the step table)
        run_job(resolve(STEPS[step], validate(copy.deepcopy(cfg))), [tmp_path / "config.yaml"])
    train = pd.read_csv(L.crop_index("train"))
    ev = pd.read_csv(L.crop_index("eval"), dtype={"shoot": str})
    assert (train["source"] != "fallback").all()
    truth = pd.read_csv(real_set / "demo_truth.csv", dtype=str).set_index("ImageID")
    person = truth["person"].reindex(ev["key"]).to_numpy()
    assert (pd.Series(person).groupby(ev["shoot"].to_numpy()).nunique() == 1).all()
    assert (ev["source"] != "fallback").mean() >= 0.95
    assert len(ev) == 4 * 7
