"""Parameter counts against torchvision's published numbers and the papers' tables.

torchvision counts ``model.parameters()``: BatchNorm's scale and bias are
parameters, its running statistics are buffers (our ``state``), so they are not
counted on either side.
"""

import pytest

# torchvision's ``sum(p.numel() for p in model.parameters())``, as documented on its model pages
TORCHVISION = {
    "alexnet_tv": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "googlenet_tv": 6_624_904,
    "inception_v3": 23_834_568,
    "resnet18_tv": 11_689_512,
    "resnet34_tv": 21_797_672,
    "resnet50_tv": 25_557_032,
    "resnet101_tv": 44_549_160,
    "resnet152_tv": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "mobilenet_v2": 3_504_872,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_counts(count, name):
    assert count(name) == TORCHVISION[name]


@pytest.mark.parametrize(("name", "expected"), [("googlenet_tv", 13_004_888), ("inception_v3", 27_161_264)])
def test_torchvision_counts_with_auxiliary_heads(count, name, expected):
    assert count(name, aux_logits=True) == expected


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_paper_resnet_strides_elsewhere_with_the_same_count(count, depth):
    assert count(f"resnet{depth}") == TORCHVISION[f"resnet{depth}_tv"]


# the papers' rounded figures, in millions, and the rounding they were printed with
PAPERS = {
    "vgg11": (133, 0),  # Simonyan & Zisserman, Table 2: A, A-LRN, B, C, D, E
    "vgg11_lrn": (133, 0),
    "vgg13": (133, 0),
    "vgg16_c": (134, 0),
    "vgg16": (138, 0),
    "vgg19": (144, 0),
    "resnet20": (0.27, 2),  # He et al. 2015, Table 6
    "resnet32": (0.46, 2),
    "resnet44": (0.66, 2),
    "resnet56": (0.85, 2),
    "resnet110": (1.7, 1),
    "resnet1202": (19.4, 1),
    "preact_resnet164": (1.7, 1),  # He et al. 2016, Table 2
    "wrn28_10": (36.5, 1),  # Zagoruyko & Komodakis, Table 4
    "wrn40_4": (8.9, 1),
    "wrn16_8": (11.0, 1),
    "wrn16_4": (2.7, 1),
    "wrn16_4_dp": (2.7, 1),  # the same weights: GroupNorm has the scale and offset BatchNorm has
    "densenet_bc100_12": (0.8, 1),  # Huang et al. 2017, Table 2
    "densenet_bc250_24": (15.3, 1),
    "densenet_bc190_40": (25.6, 1),
    "densenet40_12": (1.0, 1),
    "densenet100_12": (7.0, 1),
    "densenet100_24": (27.2, 1),
    "all_cnn_c": (1.4, 1),  # Springenberg et al. 2015, Table 1 text
    "alexnet": (61, 0),  # "60 million", as 60,965,224
}


DEEP = {"densenet_bc250_24", "densenet_bc190_40", "densenet100_12", "densenet100_24", "resnet1202"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEP else n for n in sorted(PAPERS)]
)
def test_paper_counts_within_rounding(count, name):
    millions, digits = PAPERS[name]
    assert round(count(name) / 1e6, digits) == millions


def conv(k, c_in, c_out, bias=True, groups=1):
    return k * k * c_in // groups * c_out + (c_out if bias else 0)


def test_lenet5_by_hand(count):
    expected = conv(5, 1, 6) + conv(5, 6, 16) + conv(5, 16, 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert count("lenet5") == expected == 61_706


def test_alexnet_two_gpu_layout_by_hand(count):
    convs = conv(11, 3, 96) + conv(5, 96, 256, groups=2) + conv(3, 256, 384)
    convs += conv(3, 384, 384, groups=2) + conv(3, 384, 256, groups=2)
    fcs = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert count("alexnet") == convs + fcs == 60_965_224
    # merging the GPUs doubles the inputs of conv2, conv4 and conv5
    merged = convs + fcs + 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + 3 * 3 * 192 * 256
    assert count("alexnet", groups=1) == merged == 62_378_344


def test_zfnet_by_hand(count):
    convs = conv(7, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384) + conv(3, 384, 256)
    fcs = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert count("zfnet") == convs + fcs


def cifar_resnet(n: int, shortcut: str) -> int:
    """He et al.'s 6n+2 CIFAR ResNet: convs without bias, BN scale+bias, FC; option A adds nothing."""
    total = conv(3, 3, 16, bias=False) + 2 * 16
    c_in = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(3, c_in, width, bias=False) + conv(3, width, width, bias=False) + 4 * width
            if c_in != width and shortcut == "B":
                total += c_in * width + 2 * width
            c_in = width
    return total + 64 * 10 + 10


def test_cifar_resnet20_by_hand(count):
    # option A is the paper's: 269,722. 272,474 (often quoted) is option B's 1x1 projections
    assert count("resnet20") == cifar_resnet(3, "A") == 269_722
    assert count("resnet20", shortcut="B") == cifar_resnet(3, "B") == 272_474


@pytest.mark.parametrize("depth", [32, 44, 56, 110])
def test_cifar_resnets_by_hand(count, depth):
    assert count(f"resnet{depth}") == cifar_resnet((depth - 2) // 6, "A")


def test_stochastic_depth_adds_no_parameters(count):
    assert count("resnet110_sd") == count("resnet110")


def test_nin_cifar_and_all_cnn_c_by_hand(count):
    nin = conv(5, 3, 192) + conv(1, 192, 160) + conv(1, 160, 96) + conv(5, 96, 192) + 2 * conv(1, 192, 192)
    nin += conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10)
    assert count("nin_cifar") == nin == 966_986
    all_cnn = conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 2 * conv(3, 192, 192)
    all_cnn += conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 10)
    assert count("all_cnn_c") == all_cnn == 1_369_738


def test_group_norm_has_the_batch_norm_parameter_count(count):
    assert count("resnet50", norm="group") == TORCHVISION["resnet50_tv"]


def test_fast_cnn_by_hand(count):
    def conv_bn(c_in, c_out):  # a 3x3 conv without bias, then BatchNorm's scale and bias
        return conv(3, c_in, c_out, bias=False) + 2 * c_out

    def blocks(c_in):
        return sum(
            conv_bn(c, width) + conv_bn(width, width) for c, width in ((c_in, 32), (32, 64), (64, 128))
        )

    assert count("fast_cnn") == blocks(1) + (128 * 10 + 10) == 288_170
    assert count("fast_cnn", stem=16) == conv_bn(1, 16) + blocks(16) + (128 * 10 + 10) == 292_666
