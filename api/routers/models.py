"""``/models``: the model factories this service offers; ``/jobs/{id}/model``: a job's tuned model."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api import repository
from api.deps import SessionDep
from api.openapi import errors
from api.schemas import FactoryPublic
from tuner.plugins import list_factories

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[FactoryPublic], responses=errors())
def list_models() -> list[FactoryPublic]:
    """The factories a spec may name in ``model.factory`` (``kind: module``), with their docstrings' first line.

    They come from Python files in REGTUNE_MODELS_DIR (``file:function``) and from installed packages'
    ``regtune.models`` entry points; a request can never name anything else.
    """
    return [FactoryPublic(name=f.name, source=f.source, doc=f.doc, error=f.error) for f in list_factories()]


@router.get("/jobs/{job_id}/model", response_class=Response, responses=errors(404) | {
    200: {"description": "a zip of model.safetensors (the weights of the chosen configuration, the model the "
                         "report's test metrics measured) and model.json (what tuner.load_model needs to rebuild "
                         "it)", "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
def read_job_model(session: SessionDep, job_id: str) -> Response:
    """The tuned model of a job that has succeeded; 404 until then."""
    row, archive = repository.get_job_model(session=session, job_id=job_id)
    name = f"{row.name}-{row.id}-model.zip"
    return Response(archive, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
