"""Layer archives: decompression with diff_id hashing, confined path resolution, tar apply.

What it is for: turning a layer blob (a tar, gzip'ed, zstd'ed or plain) into files inside one
snapshot directory, the way containerd's ``pkg/archive`` does, and measuring the diff_id of what
was applied. What it must never do: create, change or read (for a hardlink copy-up) anything
outside the snapshot it was given, whatever the tar says (see ``confine`` for the rules).
"""
