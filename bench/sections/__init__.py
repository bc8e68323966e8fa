"""One module per benchmark section; each ``bench_<section>(bench, subject)`` returns its results entry."""
