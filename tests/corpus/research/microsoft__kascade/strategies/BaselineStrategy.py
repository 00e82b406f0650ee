# kvaudit test corpus. Provenance: https://github.com/microsoft/kascade, src/strategies/BaselineStrategy.py,
# commit 76aea84d4216b538e001fab018cbc24894ce32c3.
# Licence: MIT, Copyright (c) Microsoft Corporation (the repository's LICENSE, and the file's own lines below:
# permission to copy and modify with the notice kept). Unchanged below this header.
# Verdict reached by reading the code (under the corpus's layer-index-reuse claim):
#   re-exports Strategy (OracleTopkStrategy imports it from here); BaselineStrategy does nothing.
# Copyright (c) Microsoft Corporation.
# Licensed under the MIT License.

from .Strategy import Strategy

class BaselineStrategy(Strategy):
    def __init__(self, name="baseline"):
        super().__init__(name)
    

    