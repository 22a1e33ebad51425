"""The package's version: libfsps's, FSPS_VERSION_* in fsps.h (the tests
check that they agree)."""
__version__ = "0.5.0"
