"""``python -m detectcrop.zoo``: list, fetch and verify model presets."""

import sys

from detectcrop.zoo import main

sys.exit(main())
