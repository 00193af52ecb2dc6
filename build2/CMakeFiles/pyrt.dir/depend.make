# Empty dependencies file for pyrt.
# This may be replaced when dependencies are built.
