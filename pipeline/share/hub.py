"""Saved pipelines on the Hugging Face Hub: a Hub id fetched with `snapshot_download`, restricted
to the files vq reads (`folder.READS`), so the Hub cache is reused and `HF_HUB_OFFLINE=1` works from
it; a saved folder uploaded with `create_repo` and `upload_folder`."""

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from vq.pipeline.errors import VQError
from vq.pipeline.share.folder import INDEX, READS, REPO_ID, files_of, read_index


def fetch(repo_id: str, revision: str | None = None, cache_dir: Path | None = None) -> Path:
    """A Hub repo id -> its snapshot in the cache (downloaded when it is not there and the Hub can be reached)."""
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=READS,
                                        library_name="vq"))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise VQError(f"the Hub has no model {repo_id}{f' at revision {revision}' if revision else ''} "
                      "(or it is private: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        raise VQError(f"{repo_id} is not in the Hugging Face cache and the Hub cannot be reached "
                      f"({'HF_HUB_OFFLINE is set' if os.environ.get('HF_HUB_OFFLINE') not in (None, '', '0') else 'no network'}); "
                      "download it once with network access") from None
    except (HfHubHTTPError, OSError) as e:
        raise VQError(f"cannot fetch {repo_id} from the Hub: {str(e).splitlines()[0]}") from None
    if not (folder / INDEX).is_file():
        raise VQError(f"the Hub repo {repo_id} is no vq pipeline (no {INDEX})")
    return folder


@dataclass
class Pushed:
    repo_id: str
    files: list[str]  # what went up (or would, on a dry run), relative to the folder
    uploaded: bool
    url: str | None = None
    commit: str | None = None


def push(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None, dry_run: bool = False) -> Pushed:
    """Upload a saved pipeline folder to the Hub repo `repo_id` (created if missing); with dry_run,
    only list what would go up."""
    folder = Path(folder)
    read_index(folder)
    if not REPO_ID.match(repo_id):
        raise VQError(f"'{repo_id}' is no Hub repo id; use user/name")
    files = files_of(folder)
    if dry_run:
        return Pushed(repo_id, files, False)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=READS,
                                   commit_message="Upload a vq pipeline")
    except (HfHubHTTPError, OSError) as e:
        raise VQError(f"cannot upload to {repo_id}: {str(e).splitlines()[0]}") from None
    return Pushed(repo_id, files, True, str(url), getattr(commit, "oid", None))
