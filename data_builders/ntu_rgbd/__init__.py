"""NTU RGB+D 60/120 skeletons (lossless body records) as a TFDS builder.

Kept import-free so that conversion worker processes, which unpickle
``skeleton_file.convert``, do not import TensorFlow Datasets.
"""
