import json

import numpy as np
import pandas as pd
import pytest
import torch

from maskpipe.io import MaskpipeError
from maskpipe.train.predict import PROB_COLUMNS, load_checkpoint, predict_probs
from maskpipe.train.augment import build_transforms
from maskpipe.train.data import CropDataset
from maskpipe.train.model import create_model


def test_training_writes_checkpoint_metrics_and_tensorboard(tiny_run):
    _, L = tiny_run
    ckpt = torch.load(L.checkpoint("a", 0), weights_only=True)
    assert ckpt["arch"] == "test_resnet" and ckpt["head"] == "single"
    metrics = json.loads(open(L.train_metrics("a", 0)).read())
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    assert 0 <= metrics["best_val_f1"] <= 1
    assert metrics["best_val_f1"] == pytest.approx(ckpt["val_f1"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(L.tensorboard("a", 0))
    events.Reload()
    assert {"train_loss", "val_loss", "lr", "train_f1", "val_f1", "train_mask_f1", "val_mask_f1",
            "val_gender_f1", "val_age_f1"} <= set(events.Tags()["scalars"])
    assert metrics["config"]["models.a"]["arch"] == "test_resnet"  # the sections it trained with


def test_oof_covers_every_labelled_image_once_per_model(tiny_run):
    _, L = tiny_run
    labels = pd.read_csv(L.labels())
    folds = pd.read_csv(L.folds())
    for model in ("a", "b"):
        oof = pd.concat([pd.read_csv(L.oof(model, f)) for f in (0, 1)])
        oof = oof[oof["tta"] == "hflip"]
        assert sorted(oof["key"]) == sorted(labels["key"])
        # each fold's OOF rows are exactly that fold's persons
        for f in (0, 1):
            part = pd.read_csv(L.oof(model, f)).query("tta == 'hflip'")
            assert set(part["person"]) == set(folds.loc[folds["fold"] == f, "person"])
        assert np.allclose(oof[PROB_COLUMNS].sum(axis=1), 1, atol=1e-4)
        test = pd.read_csv(L.test_probs(model, 0))
        assert len(test) == len(pd.read_csv(L.manifest("eval")))


def test_tta_is_the_mean_of_the_views_probabilities(tiny_run):
    from maskpipe.train.predict import tta_label, views

    _, L = tiny_run
    model, ckpt = load_checkpoint(L.checkpoint("a", 0), torch.device("cpu"))
    tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"], [], None)
    ds = CropDataset(L.crops("eval"), np.arange(5), None, tf)
    tta = {"hflip": True, "zooms": [0.8]}
    assert tta_label(tta) == "hflip+zoom0.8" and tta_label({"hflip": False, "zooms": []}) == "none"
    plain, merged = predict_probs(model, ds, torch.device("cpu"), tta, 8, "t")
    x = torch.stack([ds[i] for i in range(len(ds))])
    assert len(views(x, tta)) == 4  # image, zoom, and the mirror of each
    with torch.no_grad():
        expected = np.mean([torch.softmax(model(v), 1).numpy() for v in views(x, tta)], axis=0)
        identity = torch.softmax(model(x), 1).numpy()
    assert merged.shape == (5, 26)  # 18 classes + 3 + 2 + 3 task probabilities
    assert np.allclose(merged[PROB_COLUMNS].to_numpy(), expected, atol=1e-5)
    assert np.allclose(plain[PROB_COLUMNS].to_numpy(), identity, atol=1e-5)
    # the task columns are the marginals of the 18-class probabilities
    assert np.allclose(merged[["mask0", "mask1", "mask2"]].sum(axis=1), 1, atol=1e-5)


def test_oof_file_holds_each_image_with_and_without_tta(tiny_run):
    _, L = tiny_run
    oof = pd.read_csv(L.oof("a", 0))
    assert set(oof["tta"]) == {"hflip", "none"}
    assert (oof.groupby("tta")["key"].apply(sorted).iloc[0] == oof.groupby("tta")["key"].apply(sorted).iloc[1])


def test_unknown_arch_and_offline_pretrained_fail_with_one_line(monkeypatch):
    with pytest.raises(MaskpipeError, match="'not_a_net' is not a timm model"):
        create_model("not_a_net")
    with pytest.raises(MaskpipeError, match=r"^models.effb0.arch: 'efficientnet-b0' is not a timm "
                                            r"model \(did you mean 'efficientnet_b0'\?\)$"):
        create_model("efficientnet-b0", where="models.effb0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MaskpipeError) as err:
        create_model("resnet18", pretrained=True)
    assert "resnet18" in str(err.value) and "pretrained_file" in str(err.value)


def test_checkpoint_that_is_not_one(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MaskpipeError, match="cannot load, not a complete torch file"):
        load_checkpoint(bad, torch.device("cpu"))


def test_same_seed_same_result(tiny_run, tmp_path):
    import yaml

    from maskpipe.train.loop import TrainJob, train_fold

    config_path, L = tiny_run
    cfg = yaml.safe_load(open(config_path))
    from maskpipe.config import load_raw

    raw = load_raw(config_path)
    runs = []
    for i in range(2):
        out = tmp_path / str(i)
        runs.append(train_fold(TrainJob("a", 0, L.crops("train"), L.crop_index("train"), L.labels(),
                                        L.folds(), out / "c.pt", out / "m.json", out / "tb"),
                               {"train": raw["train"], "models.a": raw["models"]["a"]}))
        runs[-1]["state"] = torch.load(out / "c.pt", weights_only=True)["state_dict"]
    a, b = runs
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert cfg["models"]["a"]["augment"][0]["p"] > 0  # augmentations were on, and still equal


def test_pretrained_file_loads_local_weights_and_a_new_head(tmp_path):
    import timm

    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_model("test_resnet", pretrained_file=str(path))
    assert model.get_classifier().out_features == 18
    first = next(k for k in source.state_dict() if k.endswith("weight"))
    assert torch.equal(model.state_dict()[first], source.state_dict()[first])
    with pytest.raises(MaskpipeError, match=r"^models.pretrained_file: .* not found$"):
        create_model("test_resnet", pretrained_file=str(tmp_path / "none.pth"))
