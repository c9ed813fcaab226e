"""Transforms by name, strict argument errors, seeding, DataLoader workers, Mixup, sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from maskpipe.io import MaskpipeError
from maskpipe.train.augment import balanced_sampler, build_transforms, make_mixup, reseed_worker

SIZE = (48, 40)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP = {"name": "CenterCrop", "height": 56, "width": 48}
#: Every transform the brief names, with YAML-style list arguments and p=1 so each one runs.
AUGMENTS = [
    {"name": "HorizontalFlip", "p": 1.0},
    {"name": "ColorJitter", "brightness": 0.2, "p": 1.0},
    {"name": "ColorJitter", "brightness": [0.8, 1.2], "hue": [-0.05, 0.05], "p": 1.0},
    {"name": "CLAHE", "p": 1.0},
    {"name": "CoarseDropout", "num_holes_range": [1, 4], "p": 1.0},
    {"name": "Affine", "rotate": [-10, 10], "p": 1.0},
    {"name": "RandomResizedCrop", "size": [32, 32], "scale": [0.8, 1.0]},
    {"name": "MedianBlur", "blur_limit": [3, 5], "p": 1.0},  # no strict flag of its own
    {"name": "OneOf", "transforms": [{"name": "Blur"}, {"name": "GaussNoise"}], "p": 1.0},
    {"name": "SomeOf", "n": 2, "transforms": [{"name": "HorizontalFlip"}, {"name": "ToGray"},
                                              {"name": "Sharpen"}]},
]


def image(seed: int = 0, shape=(64, 56, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run(tf, img: np.ndarray | None = None) -> torch.Tensor:
    return tf(image=image() if img is None else img)["image"]


@pytest.mark.parametrize("spec", AUGMENTS, ids=lambda s: s["name"])
def test_each_transform_builds_and_runs(spec):
    out = run(build_transforms(SIZE, MEAN, STD, [CROP], [spec], seed=0))
    assert out.dtype == torch.float32 and out.shape == (3, *SIZE)


def test_yaml_lists_equal_tuples():
    as_list = {"name": "Affine", "rotate": [-10, 10], "scale": [0.9, 1.1], "p": 1.0}
    as_tuple = {**as_list, "rotate": (-10, 10), "scale": (0.9, 1.1)}
    a = run(build_transforms(SIZE, MEAN, STD, [], [as_list], seed=3))
    b = run(build_transforms(SIZE, MEAN, STD, [], [as_tuple], seed=3))
    assert torch.equal(a, b)


def test_eval_pipeline_is_deterministic_and_has_no_random_transform():
    tf = build_transforms(SIZE, MEAN, STD, [CROP], None, seed=1)
    assert [type(t).__name__ for t in tf.transforms] == ["CenterCrop", "Resize", "Normalize",
                                                         "ToTensorV2"]
    other = build_transforms(SIZE, MEAN, STD, [CROP], None, seed=2)
    assert torch.equal(run(tf), run(tf)) and torch.equal(run(tf), run(other))


def test_preprocess_applies_in_training_and_evaluation():
    img = image()
    crop = img[4:60, 4:52]  # CenterCrop 56x48 of a 64x56 image
    for augment in (None, []):
        with_crop = run(build_transforms(SIZE, MEAN, STD, [CROP], augment), img)
        manual = run(build_transforms(SIZE, MEAN, STD, [], augment), crop)
        assert torch.equal(with_crop, manual)
    train = build_transforms(SIZE, MEAN, STD, [CROP], [{"name": "HorizontalFlip"}])
    assert [type(t).__name__ for t in train.transforms][:2] == ["CenterCrop", "HorizontalFlip"]


@pytest.mark.parametrize(("augment", "message"), [
    ([{"name": "Cutout"}],
     "models.augment[0]: unknown albumentations transform 'Cutout' (did you mean 'CoarseDropout'?)"),
    ([{"name": "HorizontalFlp"}], "(did you mean 'HorizontalFlip'?)"),
    ([{"name": "HorizontalFlip"}, {"name": "HorizontalFlip", "always_apply": True}],
     "models.augment[1] (HorizontalFlip): unknown argument 'always_apply'"),
    ([{"name": "CoarseDropout", "max_holes": 8}],
     "models.augment[0] (CoarseDropout): unknown argument 'max_holes'"),
    ([{"name": "Affine", "rotat": 10}], "unknown argument 'rotat' (did you mean 'rotate'?)"),
    ([{"name": "HorizontalFlip", "strict": False}], "unknown argument 'strict'"),
    ([{"name": "HorizontalFlip", "p": "often"}], "models.augment[0] (HorizontalFlip): p: "),
    ([{"name": "ColorJitter", "brightness": "a"}], "(ColorJitter): brightness"),
    ([{"name": "CoarseDropout", "num_holes_range": [1, 4, 5]}], "num_holes_range: Tuple should"),
    ([{"name": "MedianBlur", "blur_limit": "x"}], "(MedianBlur): blur_limit"),
    ([{"name": "OneOf", "transforms": [{"name": "Blur"}, {"name": "MedianBlr"}]}],
     "models.augment[0].transforms[1]: unknown albumentations transform 'MedianBlr'"),
    ([{"name": "Normalize"}], "added by the pipeline"),
    ([{"name": "Compose", "transforms": []}], "unknown albumentations transform 'Compose'"),
    (["HorizontalFlip"], "models.augment[0]: expected a mapping with a 'name' key"),
])
def test_config_errors_name_the_item_and_argument(augment, message):
    with pytest.raises(MaskpipeError) as info:
        build_transforms(SIZE, MEAN, STD, [], augment, where="models.a")
    text = str(info.value)
    assert message.replace("models.", "models.a.") in text and "\n" not in text


def test_preprocess_errors_name_preprocess():
    with pytest.raises(MaskpipeError, match=r"^models\.preprocess\[0\] \(CenterCrop\): width"):
        build_transforms(SIZE, MEAN, STD, [{"name": "CenterCrop", "height": 10}], None)


TRAIN = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "ColorJitter", "brightness": 0.3, "p": 0.5},
         {"name": "Affine", "rotate": [-20, 20], "p": 0.5}, {"name": "CoarseDropout", "p": 0.5}]


def draws(seed, n: int = 6) -> list[torch.Tensor]:
    tf = build_transforms(SIZE, MEAN, STD, [], TRAIN, seed=seed)
    return [run(tf) for _ in range(n)]


def test_same_seed_same_augmentations_different_seed_different():
    a, b, c = draws(1), draws(1), draws(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert len({x.numpy().tobytes() for x in a}) > 1  # successive calls differ too


def test_children_draw_independently():
    # albumentations 2.0.8 gives each child the Compose's seed: equal-p flips would then always
    # fire together (both or neither). Ours must show all four outcomes.
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, axis=2)
    tf = build_transforms((4, 4), (0, 0, 0), (1 / 255,) * 3, [],
                          [{"name": "HorizontalFlip"}, {"name": "VerticalFlip"}], seed=1)
    corners = {int(run(tf, img)[0, 0, 0]) for _ in range(200)}
    assert corners == {0, 3, 12, 15}


class Repeat(Dataset):
    """The same image ``n`` times through ``transform``."""

    def __init__(self, transform, n: int = 8):
        self.transform, self.n, self.img = transform, n, image()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(image=self.img)["image"]


def worker_outputs(seed: int, concat: bool = False) -> list[torch.Tensor]:
    tf = build_transforms(SIZE, MEAN, STD, [], TRAIN, seed=0)
    # concat: a pseudo-label round's training set (the fold's rows, then the eval photos), whose
    # two parts share one transform, as build_data makes it
    ds = ConcatDataset([Repeat(tf, 4), Repeat(tf, 4)]) if concat else Repeat(tf)
    dl = DataLoader(ds, batch_size=1, num_workers=2, worker_init_fn=reseed_worker,
                    generator=torch.Generator().manual_seed(seed))
    return [x[0] for x in dl]


@pytest.mark.parametrize("concat", [False, True], ids=["one_dataset", "concat_dataset"])
def test_reseed_worker_in_dataloader(concat):
    first, again, other = (worker_outputs(s, concat) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    # Batches alternate between the two workers; without reseeding both would copy seed 0.
    assert not all(torch.equal(x, y) for x, y in zip(first[0::2], first[1::2]))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))


MIX = {"prob": 1.0, "mixup_alpha": 0.4, "cutmix_alpha": 1.0, "switch_prob": 0.5}


def test_mixup_shapes_soft_targets_and_determinism():
    mixup = make_mixup(MIX, num_classes=18)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 18

    def mixed(seed):
        np.random.seed(seed)
        return mixup(x.clone(), y.clone())

    (xa, ya), (xb, yb), (xc, _) = mixed(0), mixed(0), mixed(5)
    assert xa.shape == x.shape and ya.shape == (8, 18)
    torch.testing.assert_close(ya.sum(1), torch.ones(8))
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    smooth = make_mixup(MIX, num_classes=18, label_smoothing=0.1)
    assert smooth.label_smoothing == 0.1 and make_mixup(MIX, 18).label_smoothing == 0.0


@pytest.mark.parametrize("off", [{"prob": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}])
def test_mixup_off(off):
    assert make_mixup({**MIX, **off}, num_classes=18) is None


def test_balanced_sampler_draws_classes_equally_and_reproducibly():
    labels = np.array([0] * 900 + [5] * 90 + [17] * 10)
    drawn = np.concatenate([labels[list(balanced_sampler(labels, torch.Generator().manual_seed(s)))]
                            for s in range(30)])
    share = np.bincount(drawn, minlength=18)[[0, 5, 17]] / len(drawn)
    np.testing.assert_allclose(share, 1 / 3, atol=0.02)
    a = list(balanced_sampler(labels, torch.Generator().manual_seed(7)))
    b = list(balanced_sampler(labels, torch.Generator().manual_seed(7)))
    assert a == b and len(a) == len(labels)
