"""Statistics: CL metrics from a matrix, intervals over examples and seeds."""
