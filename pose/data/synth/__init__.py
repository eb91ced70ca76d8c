"""``pose synth``: the embedded default dataset rendered on the CPU from real motion capture.

Modules: ``make_clips`` (regenerates ``clips.npz`` from the DeepMimic clips in the pybullet
wheel; pybullet only needed there), ``motion`` (clip tracks, interpolation, per-subject bone
lengths, 32-joint filling), ``render`` (cameras, crop boxes, shaded-capsule body, procedural
backgrounds), ``writer`` (the seed's per-sample txt layout), ``generate`` (plan + render the
data set), ``cli`` (the ``pose synth`` subcommand).
"""
