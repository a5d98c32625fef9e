"""Published results for context: reported by others, not measured by this project.

The rows of Mikami et al. 2018 (v1), "ImageNet/ResNet-50 Training in 224 Seconds", Table as
reproduced by NVIDIA's blog; only rows confirmed in that source (see the project's research
notes on the paper, section 4). They are ImageNet-1k at full scale on GPU/TPU clusters, so
they frame our runs; they are not comparable with a toy data set on a CPU.
"""

SOURCE = ("https://developer.nvidia.com/blog/"
          "sony-breaks-resnet-50-training-record-with-nvidia-v100-tensor-core-gpus/")
CAPTION = ("Reported by others (Mikami et al. 2018, v1, comparison table as reproduced by "
           f"NVIDIA: {SOURCE}); ImageNet-1k, not measured by this project.")
HEADER = ("work", "batch", "processor", "library", "time", "top-1")
ROWS = (
    ("He et al.", "256", "P100 ×8", "Caffe", "29 h", "75.30%"),
    ("Goyal et al.", "8K", "P100 ×256", "Caffe2", "1 h", "76.30%"),
    ("Smith et al.", "8K→16K", "full TPU Pod", "TensorFlow", "30 min", "76.10%"),
    ("Akiba et al.", "32K", "P100 ×1024", "Chainer", "15 min", "74.90%"),
    ("Jia et al.", "64K", "P40 ×2048", "TensorFlow", "6.6 min", "75.80%"),
    ("Sony (Mikami et al., v1)", "34K→68K", "V100 ×2176", "NNL (nnabla)", "224 s", "75.03%"),
)
