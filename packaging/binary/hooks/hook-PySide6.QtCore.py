# Overrides PyInstaller's hook of the same name: the same collection, minus unused Qt plugins and translations.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qt_trim import trimmed_qt6_dependencies  # noqa: E402

hiddenimports, binaries, datas = trimmed_qt6_dependencies(__file__)
