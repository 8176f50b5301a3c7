"""orchestrator.data.args: the `data:` section's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.data.args import ImageDataArgs


def test_spec_errors_name_fields():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        ImageDataArgs.model_validate(
            {
                "augment": {"fill_mode": "mirror", "zoom_range": [1.2, 0.8]},
                "image_size": 64,
                "resize": 32,
                "on_bad": "ignore",
            }
        )
    text = str(err.value)
    for key in ("fill_mode", "zoom_range", "on_bad"):
        assert key in text
    rel = ImageDataArgs.model_validate({"path": "some/rel"})
    assert Path(rel.path).is_absolute()
