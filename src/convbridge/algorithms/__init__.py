"""Algorithms beyond each framework's own convolution, registered with :mod:`convbridge.dispatch` for every backend
where they make sense: FFT convolution (:mod:`.fft`) and direct methods (:mod:`.direct`)."""
