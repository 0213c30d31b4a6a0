from fastlayers.cli import main

raise SystemExit(main())
