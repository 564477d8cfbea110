"""Pipeline stages: each a small module with ``main(argv)``; dvc.yaml passes every path."""
