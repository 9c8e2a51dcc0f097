/**
 * podman 4.3 and buildah 1.28 against a registry node, with private vfs storage and config
 * (helpers/podman.ts). podman pushes OCI manifests without a `mediaType` field in the body,
 * which the registry must accept and serve back with the OCI Content-Type.
 */
import t from 'tap'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { removeTree } from '../helpers/cleanup.js'
import { readOciLayout, rootfsTar, textEntries, ARCH, OCI_INDEX, OCI_MANIFEST } from '../helpers/images.js'
import { containersEnv } from '../helpers/podman.js'
import { fetchBlob, fetchManifest, sha256, startTarget } from '../helpers/registry.js'
import { missingTools, requireTool } from '../helpers/tools.js'

const reg = await startTarget(t)
const ctr = await containersEnv(t, [reg.host])
// Access control is on, as in production: podman login writes the auth file buildah and skopeo share.
if (missingTools('podman') === undefined) await ctr.login('podman', reg.host, reg.credentials)
else if (missingTools('skopeo') === undefined) await ctr.login('skopeo', reg.host, reg.credentials)
const work = await mkdtemp(join(tmpdir(), 'fl-podman-'))
t.teardown(async () => { await removeTree(work) })

interface Manifest { mediaType?: string, config: { digest: string, mediaType: string }, layers: Array<{ mediaType: string, digest: string, size: number }> }

async function podmanImage (ref: string): Promise<{ Id: string, Digest: string, RepoDigests: string[] }> {
  const res = await ctr.podmanOk(['image', 'inspect', ref])
  const arr = JSON.parse(res.stdout) as Array<{ Id: string, Digest: string, RepoDigests: string[] }>
  if (arr[0] === undefined) throw new Error(`podman image inspect ${ref}: empty`)
  return arr[0]
}

t.test('podman import, push, rmi and pull keep the manifest digest and image id', async (t) => {
  if (!requireTool(t, 'podman')) return
  const rootfs = join(work, 'rootfs.tar')
  await writeFile(rootfs, rootfsTar(textEntries({ 'etc/podman': 'imported by podman\n' })))
  const local = 'localhost/flotilla-test/podman:1'
  await ctr.podmanOk(['import', '--change', 'CMD ["/bin/hello"]', rootfs, local])
  const id = (await podmanImage(local)).Id

  const remote = `${reg.host}/podman/busybox:1`
  const digestFile = join(work, 'podman.digest')
  await ctr.podmanOk(['push', '--tls-verify=false', '--digestfile', digestFile, local, `docker://${remote}`])
  const digest = (await readFile(digestFile, 'utf8')).trim()
  t.match(digest, /^sha256:[0-9a-f]{64}$/, 'podman push wrote the manifest digest')

  const got = await fetchManifest(reg, 'podman/busybox', '1')
  t.equal(got.status, 200, 'GET manifest by tag')
  t.equal(got.digest, digest, 'Docker-Content-Digest is the digest podman pushed')
  t.equal(sha256(got.body), digest, 'the stored bytes hash to it: stored exactly as pushed')
  const m = JSON.parse(got.body.toString()) as Manifest
  // podman leaves mediaType out of the body; the registry has to take it from the Content-Type it was sent with.
  t.equal(m.mediaType, undefined, 'podman sent no mediaType in the body (the case this test is about)')
  t.equal(got.contentType, OCI_MANIFEST, 'served with the OCI manifest Content-Type')
  t.equal(m.config.digest, `sha256:${id}`, 'manifest config is the podman image id')
  for (const l of m.layers) {
    const blob = await fetchBlob(reg, 'podman/busybox', l.digest)
    t.equal(sha256(blob.body), l.digest, `layer ${l.digest} stored intact`)
  }

  await ctr.podmanOk(['rmi', local])
  t.not((await ctr.podman(['image', 'exists', local])).code, 0, 'image removed locally')
  await ctr.podmanOk(['pull', '--tls-verify=false', remote])
  const pulled = await podmanImage(remote)
  t.equal(pulled.Id, id, 'pulled image has the original image id')
  t.equal(pulled.Digest, digest, 'pulled image digest is the pushed manifest digest')
  t.ok(pulled.RepoDigests.includes(`${reg.host}/podman/busybox@${digest}`), `RepoDigests names the pushed digest: ${pulled.RepoDigests.join(', ')}`)

  // Without systemd here podman needs explicit ulimits (see docs/clients.md).
  const run = await ctr.podman(['run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', remote, 'sh', '-c', 'echo hello'])
  t.equal(run.code, 0, `podman run exits 0: ${run.stderr}`)
  t.equal(run.stdout, 'hello\n', 'the pulled image runs')

  await ctr.podmanOk(['rmi', remote])
  await ctr.podmanOk(['pull', '--tls-verify=false', `${reg.host}/podman/busybox@${digest}`])
  t.equal((await podmanImage(`${reg.host}/podman/busybox@${digest}`)).Id, id, 'pull by digest gives the same image')
})

t.test('buildah from scratch, add, commit and push; skopeo pulls the same digest and blobs', async (t) => {
  if (!requireTool(t, 'buildah', 'skopeo')) return
  const rootfs = join(work, 'buildah-rootfs.tar')
  await writeFile(rootfs, rootfsTar(textEntries({ 'etc/buildah': 'built by buildah\n' })))
  const cname = (await ctr.buildahOk(['from', 'scratch'])).stdout.trim()
  t.teardown(async () => { await ctr.buildah(['rm', cname]) })
  await ctr.buildahOk(['add', cname, rootfs, '/']) // a local tar archive is extracted into the container
  await ctr.buildahOk(['config', '--cmd', '/bin/hello', '--env', 'PATH=/bin', cname])
  const local = 'localhost/flotilla-test/buildah:1'
  const imageId = (await ctr.buildahOk(['commit', '--format', 'oci', cname, local])).stdout.trim().split('\n').pop() ?? ''

  const remote = `${reg.host}/buildah/busybox:1`
  const digestFile = join(work, 'buildah.digest')
  await ctr.buildahOk(['push', '--tls-verify=false', '--digestfile', digestFile, local, `docker://${remote}`])
  const digest = (await readFile(digestFile, 'utf8')).trim()

  const head = await fetchManifest(reg, 'buildah/busybox', '1', 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.digest, digest, 'HEAD Docker-Content-Digest is the digest buildah pushed')
  t.equal(head.contentType, OCI_MANIFEST, 'an OCI manifest')
  const raw = await ctr.skopeoOk(['inspect', '--tls-verify=false', '--raw', `docker://${remote}`])
  t.equal(sha256(raw.stdout), digest, 'skopeo inspect --raw hashes to the pushed digest')

  const out = join(work, 'buildah-pulled')
  await mkdir(work, { recursive: true })
  await ctr.skopeoOk(['copy', '--src-tls-verify=false', `docker://${remote}`, `oci:${out}:pulled`])
  const pulled = await readOciLayout(out, 'pulled')
  t.equal(pulled.manifestDigest, digest, 'skopeo pulled the manifest buildah pushed')
  t.equal(pulled.parsed.config.digest, `sha256:${imageId}`, 'its config is the image buildah committed')
  for (const d of [pulled.parsed.config.digest, ...pulled.parsed.layers.map((l) => l.digest)]) {
    const fromRegistry = await fetchBlob(reg, 'buildah/busybox', d)
    t.ok((await pulled.readBlob(d)).equals(fromRegistry.body), `blob ${d} pulled byte-identical`)
    t.equal(sha256(fromRegistry.body), d, `blob ${d} hashes to its digest`)
  }
  const layer = pulled.parsed.layers[0]
  t.ok(layer !== undefined && gunzipSync(await pulled.readBlob(layer.digest)).includes(Buffer.from('built by buildah\n')), 'the added file is in the layer')

  // A Docker-format commit of the same container pushes a schema 2 manifest.
  await ctr.buildahOk(['commit', '--format', 'docker', cname, 'localhost/flotilla-test/buildah:docker'])
  const digestFile2 = join(work, 'buildah-docker.digest')
  await ctr.buildahOk(['push', '--tls-verify=false', '--digestfile', digestFile2, 'localhost/flotilla-test/buildah:docker', `docker://${reg.host}/buildah/busybox:docker`])
  const d2 = (await readFile(digestFile2, 'utf8')).trim()
  const got2 = await fetchManifest(reg, 'buildah/busybox', 'docker')
  t.equal(got2.digest, d2, 'docker-format push: Docker-Content-Digest matches')
  t.equal(got2.contentType, 'application/vnd.docker.distribution.manifest.v2+json', 'served as Docker schema 2')
  const tags = JSON.parse((await ctr.skopeoOk(['list-tags', '--tls-verify=false', `docker://${reg.host}/buildah/busybox`])).stdout) as { Tags: string[] }
  t.same([...tags.Tags].sort(), ['1', 'docker'], 'both tags listed')
})

t.test('podman manifest push --all uploads an image index with both platform images', async (t) => {
  if (!requireTool(t, 'podman')) return
  const parts: Array<{ arch: string, id: string }> = []
  for (const arch of ['amd64', 'arm64']) {
    const rootfs = join(work, `list-${arch}.tar`)
    await writeFile(rootfs, rootfsTar(textEntries({ 'etc/arch': `${arch}\n` })))
    const ref = `localhost/flotilla-test/list-part:${arch}`
    await ctr.podmanOk(['import', '--arch', arch, rootfs, ref])
    parts.push({ arch, id: (await podmanImage(ref)).Id })
  }
  await ctr.podmanOk(['manifest', 'create', 'localhost/flotilla-test/list:1'])
  for (const { arch } of parts) await ctr.podmanOk(['manifest', 'add', 'localhost/flotilla-test/list:1', `containers-storage:localhost/flotilla-test/list-part:${arch}`])
  const digestFile = join(work, 'list.digest')
  await ctr.podmanOk(['manifest', 'push', '--all', '--tls-verify=false', '--digestfile', digestFile, 'localhost/flotilla-test/list:1', `docker://${reg.host}/podman/list:1`])
  const digest = (await readFile(digestFile, 'utf8')).trim()

  const got = await fetchManifest(reg, 'podman/list', '1')
  t.equal(got.status, 200, 'GET the index by tag')
  t.equal(got.digest, digest, 'Docker-Content-Digest is the digest podman pushed')
  t.equal(sha256(got.body), digest)
  const index = JSON.parse(got.body.toString()) as { mediaType?: string, manifests: Array<{ digest: string, mediaType: string, platform?: { architecture: string } }> }
  t.equal(got.contentType, index.mediaType ?? OCI_INDEX, 'served with the index media type it was pushed as')
  t.same(index.manifests.map((m) => m.platform?.architecture).sort(), ['amd64', 'arm64'], 'one entry per platform')
  for (const m of index.manifests) {
    const child = await fetchManifest(reg, 'podman/list', m.digest)
    t.equal(child.status, 200, `child ${m.platform?.architecture} manifest stored`)
    t.equal(sha256(child.body), m.digest, 'child bytes hash to the digest the index names')
    const cfg = (JSON.parse(child.body.toString()) as Manifest).config.digest
    t.equal(cfg, `sha256:${parts.find((p) => p.arch === m.platform?.architecture)?.id ?? ''}`, 'child config is the imported image')
  }

  // A pull through the index resolves this machine's platform.
  await ctr.podmanOk(['pull', '--tls-verify=false', `${reg.host}/podman/list:1`])
  t.equal((await podmanImage(`${reg.host}/podman/list:1`)).Id, parts.find((p) => p.arch === ARCH)?.id, `podman pull chose the ${ARCH} image`)
})

// At the end: it logs out.
t.test('podman logout makes pulls fail; podman login brings access back', async (t) => {
  if (!requireTool(t, 'podman')) return
  const rootfs = join(work, 'private.tar')
  await writeFile(rootfs, rootfsTar())
  await ctr.podmanOk(['import', rootfs, 'localhost/flotilla-test/private:1'])
  const remote = `${reg.host}/podman/private:1`
  await ctr.podmanOk(['push', '--tls-verify=false', 'localhost/flotilla-test/private:1', `docker://${remote}`])
  await ctr.podmanOk(['logout', reg.host])
  const auth = JSON.parse(await readFile(ctr.authFile, 'utf8')) as { auths: Record<string, unknown> }
  t.notOk(reg.host in auth.auths, 'logout removed the credentials from the auth file')
  const anon = await ctr.podman(['pull', '--tls-verify=false', remote])
  t.not(anon.code, 0, 'pull without credentials fails')
  t.match(anon.stderr, /unauthorized|authentication required|401/i)
  await ctr.login('podman', reg.host, reg.credentials)
  const ok = await ctr.podman(['pull', '--tls-verify=false', remote])
  t.equal(ok.code, 0, `pull after login works: ${ok.stderr}`)
})
