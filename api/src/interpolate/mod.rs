//! Ops files (go-patch) and `((var))` interpolation, as `bosh interpolate` does them.
