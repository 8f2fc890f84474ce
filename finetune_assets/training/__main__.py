from finetune_assets.training.entrypoint import main

if __name__ == "__main__":
    raise SystemExit(main())
