"""musicnn, the pretrained music tagger inside the clip encoder (see tagger.py, musicnn.py).

Kept free of torch at import time: labels.py is what configs and the CLI read.
"""
