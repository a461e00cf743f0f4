from rp_devstack.runpod_emulator.cli import main

raise SystemExit(main())
