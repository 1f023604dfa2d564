"""Tests of the hashcore native module, against independent implementations."""
