/**
 * The Docker engine (docker.io 20.10, private dockerd) against a registry node: load and
 * import busybox images made by hand, push, remove, pull back and run them. docker push
 * converts to Docker schema 2 and re-gzips layers, so we compare what survives that: the
 * image id (config digest), the uncompressed layers (diff_ids) and the pushed manifest digest.
 */
import t, { type Test } from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { removeTree } from '../helpers/cleanup.js'
import { runOk } from '../helpers/exec.js'
import { startDocker, type DockerEngine } from '../helpers/docker.js'
import { ARCH, busyboxImage, dockerArchive, rootfsTar, textEntries, writeOciLayout, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_LAYER_GZIP } from '../helpers/images.js'
import { fetchBlob, fetchManifest, sha256, startTarget } from '../helpers/registry.js'
import { missingTools, requireTool } from '../helpers/tools.js'

const reg = await startTarget(t)
const work = await mkdtemp(join(tmpdir(), 'fl-docker-'))
t.teardown(async () => { await removeTree(work) })
// One engine for the whole file; without dockerd every test below fails or skips via requireTool.
const engine: DockerEngine | undefined = missingTools('dockerd', 'docker') === undefined ? await startDocker(t) : undefined
// Access control is on, as in production: log the engine in once.
if (engine !== undefined) await engine.login(reg.host, reg.credentials)

interface Manifest { mediaType: string, config: { digest: string }, layers: Array<{ mediaType: string, digest: string, size: number }> }

/** The digest `docker push` prints on its last line: "TAG: digest: sha256:... size: N". */
function pushedDigest (stdout: string): string {
  const m = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(stdout)
  if (m?.[1] === undefined) throw new Error(`no digest in docker push output:\n${stdout}`)
  return m[1]
}

async function inspect (d: DockerEngine, ref: string): Promise<{ Id: string, RepoDigests: string[], RepoTags: string[] }> {
  const res = await d.dockerOk(['image', 'inspect', ref])
  const arr = JSON.parse(res.stdout) as Array<{ Id: string, RepoDigests: string[], RepoTags: string[] }>
  if (arr[0] === undefined) throw new Error(`docker image inspect ${ref}: empty`)
  return arr[0]
}

/** Check the stored manifest: Docker schema 2, the right config, and layers that gunzip to `diffIds`. */
async function checkStored (t: Test, repo: string, tag: string, digest: string, configDigest: string, diffIds: string[]): Promise<void> {
  const got = await fetchManifest(reg, repo, tag)
  t.equal(got.status, 200, `GET manifest ${repo}:${tag}`)
  t.equal(got.digest, digest, 'Docker-Content-Digest equals the digest docker push printed')
  t.equal(sha256(got.body), digest, 'the stored manifest hashes to that digest')
  t.equal(got.contentType, DOCKER_MANIFEST, 'stored as a Docker schema 2 manifest')
  const m = JSON.parse(got.body.toString()) as Manifest
  t.equal(m.config.digest, configDigest, 'manifest config is the image id')
  t.equal(m.layers.length, diffIds.length, 'one manifest layer per image layer')
  for (const [i, l] of m.layers.entries()) {
    t.equal(l.mediaType, DOCKER_LAYER_GZIP)
    const blob = await fetchBlob(reg, repo, l.digest)
    t.equal(blob.status, 200, `layer ${i} blob is stored`)
    t.equal(blob.body.length, l.size, `layer ${i} has the size the manifest says`)
    t.equal(sha256(blob.body), l.digest, `layer ${i} hashes to its digest`)
    t.equal(sha256(gunzipSync(blob.body)), diffIds[i], `layer ${i} uncompresses to the diff_id docker loaded`)
  }
  const cfg = await fetchBlob(reg, repo, configDigest)
  t.equal(sha256(cfg.body), configDigest, 'config blob is stored intact')
}

t.test('docker load, tag, push, rmi, pull and run a busybox image: ids and digests survive', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const d = engine
  const image = busyboxImage({ randomLayerSizes: [2 << 20], extraLayers: [textEntries({ 'etc/motd': 'docker test\n' })] })
  const archive = join(work, 'load.tar')
  await writeFile(archive, dockerArchive(image, ['flotilla-test/busybox:loaded']))
  const load = await d.dockerOk(['load', '-i', archive])
  t.match(load.stdout, /Loaded image: flotilla-test\/busybox:loaded/)
  t.equal((await inspect(d, 'flotilla-test/busybox:loaded')).Id, image.configDigest, 'loaded image id is the config digest')

  const ref = `${reg.host}/docker/busybox:1.0`
  await d.dockerOk(['tag', 'flotilla-test/busybox:loaded', ref])
  const push = await d.dockerOk(['push', ref])
  const digest = pushedDigest(push.stdout)
  await checkStored(t, 'docker/busybox', '1.0', digest, image.configDigest, image.layers.map((l) => l.diffId))

  const again = await d.dockerOk(['push', ref])
  t.equal(pushedDigest(again.stdout), digest, 'pushing again gives the same digest')
  t.match(again.stdout, /Layer already exists/, 'and uploads nothing new')

  await d.dockerOk(['rmi', ref, 'flotilla-test/busybox:loaded'])
  t.not((await d.docker(['image', 'inspect', ref])).code, 0, 'image is gone locally')

  const pull = await d.dockerOk(['pull', ref])
  t.match(pull.stdout, new RegExp(`Digest: ${digest}`), 'docker pull reports the pushed digest')
  const info = await inspect(d, ref)
  t.equal(info.Id, image.configDigest, 'pulled image has the original image id')
  t.same(info.RepoDigests, [`${reg.host}/docker/busybox@${digest}`], 'RepoDigests is the pushed digest')

  const echo = await d.docker(['run', '--rm', '--network', 'none', ref, 'sh', '-c', 'echo hello'])
  t.equal(echo.code, 0, `docker run exits 0: ${echo.stderr}`)
  t.equal(echo.stdout, 'hello\n', 'sh -c "echo hello" prints hello')
  const cmd = await d.docker(['run', '--rm', '--network', 'none', ref])
  t.equal(cmd.stdout, 'hello from flotilla\n', 'the default command (the image config Cmd) runs the script')
  const motd = await d.docker(['run', '--rm', '--network', 'none', ref, 'cat', '/etc/motd'])
  t.equal(motd.stdout, 'docker test\n', 'files from the top layer are there')

  // Pull by digest: a second client asking for exactly what was pushed.
  await d.dockerOk(['rmi', ref])
  const byDigest = await d.dockerOk(['pull', `${reg.host}/docker/busybox@${digest}`])
  t.match(byDigest.stdout, new RegExp(`Digest: ${digest}`))
  t.equal((await inspect(d, `${reg.host}/docker/busybox@${digest}`)).Id, image.configDigest, 'pull by digest gives the same image')
})

t.test('docker push to a second repository mounts the layers from the first, a 24 MiB one included', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const d = engine
  // docker streams each layer in one chunked PATCH; 24 MiB makes that body span many reads.
  const image = busyboxImage({ randomLayerSizes: [1 << 20, 24 << 20] })
  const archive = join(work, 'mount.tar')
  await writeFile(archive, dockerArchive(image, [`${reg.host}/docker/mount-src:1`]))
  await d.dockerOk(['load', '-i', archive])
  const first = pushedDigest((await d.dockerOk(['push', `${reg.host}/docker/mount-src:1`])).stdout)
  await d.dockerOk(['tag', `${reg.host}/docker/mount-src:1`, `${reg.host}/docker/mount-dst:1`])
  const push = await d.dockerOk(['push', `${reg.host}/docker/mount-dst:1`])
  t.equal(pushedDigest(push.stdout), first, 'same manifest digest in both repositories')
  // docker asks POST /v2/docker/mount-dst/blobs/uploads/?mount=D&from=docker/mount-src; a 201 shows as "Mounted from".
  const mounted = push.stdout.split('\n').filter((l) => l.includes('Mounted from docker/mount-src')).length
  t.equal(mounted, image.layers.length, `every layer mounted, not re-uploaded:\n${push.stdout}`)
  await checkStored(t, 'docker/mount-dst', '1', first, image.configDigest, image.layers.map((l) => l.diffId))
})

t.test('docker import a rootfs tarball, push, pull by digest and run it', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const d = engine
  const rootfs = join(work, 'rootfs.tar')
  await writeFile(rootfs, rootfsTar(textEntries({ 'etc/imported': 'yes\n' })))
  const ref = `${reg.host}/docker/imported:v1`
  const imp = await d.dockerOk(['import', '--change', 'CMD ["/bin/hello"]', rootfs, ref])
  const id = imp.stdout.trim()
  t.match(id, /^sha256:[0-9a-f]{64}$/, 'docker import prints the new image id')
  const digest = pushedDigest((await d.dockerOk(['push', ref])).stdout)
  const head = await fetchManifest(reg, 'docker/imported', 'v1', 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.digest, digest, 'HEAD by tag gives the pushed digest')
  const m = JSON.parse((await fetchManifest(reg, 'docker/imported', digest)).body.toString()) as Manifest
  t.equal(m.config.digest, id, 'config digest is the imported image id')

  await d.dockerOk(['rmi', ref])
  await d.dockerOk(['pull', `${reg.host}/docker/imported@${digest}`])
  t.equal((await inspect(d, `${reg.host}/docker/imported@${digest}`)).Id, id, 'pulled by digest: same image id')
  const out = await d.docker(['run', '--rm', '--network', 'none', `${reg.host}/docker/imported@${digest}`])
  t.equal(out.code, 0, `run exits 0: ${out.stderr}`)
  t.equal(out.stdout, 'hello from flotilla\n', 'the CMD set at import runs')
  const cat = await d.docker(['run', '--rm', '--network', 'none', `${reg.host}/docker/imported@${digest}`, 'cat', '/etc/imported'])
  t.equal(cat.stdout, 'yes\n', 'the imported file is in the pulled image')
})

t.test('docker pulls and runs an OCI image that skopeo pushed', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker', 'skopeo') || engine === undefined) return
  const d = engine
  const image = busyboxImage({ extraLayers: [textEntries({ 'etc/origin': 'skopeo\n' })] })
  const layout = join(work, 'oci-layout')
  await writeOciLayout(layout, image, 'v1')
  const creds = `${reg.credentials.username}:${reg.credentials.password}`
  await runOk('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${reg.host}/docker/from-skopeo:v1`])
  const ref = `${reg.host}/docker/from-skopeo:v1`
  const pull = await d.dockerOk(['pull', ref])
  t.match(pull.stdout, new RegExp(`Digest: ${image.manifestDigest}`), 'docker sees the OCI manifest digest')
  const info = await inspect(d, ref)
  t.equal(info.Id, image.configDigest, 'image id is the OCI config digest')
  t.same(info.RepoDigests, [`${reg.host}/docker/from-skopeo@${image.manifestDigest}`])
  const out = await d.docker(['run', '--rm', '--network', 'none', ref, 'cat', '/etc/origin'])
  t.equal(out.code, 0, `run exits 0: ${out.stderr}`)
  t.equal(out.stdout, 'skopeo\n', 'the OCI image runs under docker')
})

t.test('docker manifest create and push a manifest list over two pushed images', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const d = engine
  const refs: string[] = []
  const digests: string[] = []
  const configs = new Map<string, string>()
  for (const arch of ['amd64', 'arm64']) {
    const image = busyboxImage({ architecture: arch })
    configs.set(arch, image.configDigest)
    const ref = `${reg.host}/docker/list-parts:${arch}`
    const archive = join(work, `list-${arch}.tar`)
    await writeFile(archive, dockerArchive(image, [ref]))
    await d.dockerOk(['load', '-i', archive])
    digests.push(pushedDigest((await d.dockerOk(['push', ref])).stdout))
    refs.push(ref)
  }
  const list = `${reg.host}/docker/list:1`
  await d.dockerOk(['manifest', 'create', '--insecure', list, ...refs])
  // The CLI PUTs each child manifest by digest into docker/list (mounting its blobs), then the list by tag.
  const push = await d.dockerOk(['manifest', 'push', '--insecure', list])
  const listDigest = push.stdout.trim().split('\n').pop() ?? ''
  t.match(listDigest, /^sha256:[0-9a-f]{64}$/, 'docker manifest push prints the list digest')
  const got = await fetchManifest(reg, 'docker/list', '1')
  t.equal(got.status, 200)
  t.equal(got.digest, listDigest, 'Docker-Content-Digest is the pushed list digest')
  t.equal(got.contentType, DOCKER_MANIFEST_LIST, 'served as a Docker manifest list')
  const body = JSON.parse(got.body.toString()) as { manifests: Array<{ digest: string, platform: { architecture: string } }> }
  t.same(body.manifests.map((m) => m.digest), digests, 'the list names both pushed manifests')
  t.same(body.manifests.map((m) => m.platform.architecture), ['amd64', 'arm64'])
  for (const dg of digests) t.equal((await fetchManifest(reg, 'docker/list', dg, 'HEAD')).status, 200, `child ${dg} present in the list repository`)
  const insp = await d.dockerOk(['manifest', 'inspect', '--insecure', list])
  t.same((JSON.parse(insp.stdout) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest), digests, 'docker manifest inspect reads it back')
  // docker pull picks this machine's platform out of the list.
  await d.dockerOk(['pull', list])
  const pulled = await inspect(d, list)
  t.ok(pulled.RepoDigests.includes(`${reg.host}/docker/list@${listDigest}`), `RepoDigests names the list digest: ${pulled.RepoDigests.join(', ')}`)
  t.equal(pulled.Id, configs.get(ARCH), `the ${ARCH} image was chosen from the list`)
})

t.test('docker pull of an unknown tag fails with a not-found error', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const res = await engine.docker(['pull', `${reg.host}/docker/busybox:does-not-exist`])
  t.not(res.code, 0, 'docker pull exits non-zero')
  t.match(res.stderr, /manifest unknown|not found/i, 'and reports the manifest as unknown')
})

// At the end: it logs out, and failed logins may count against the client address's rate limit.
t.test('docker logout makes pushes fail; a wrong password fails login; the right one succeeds', async (t) => {
  if (!requireTool(t, 'dockerd', 'docker') || engine === undefined) return
  const d = engine
  const image = busyboxImage()
  const ref = `${reg.host}/docker/private:1`
  const archive = join(work, 'private.tar')
  await writeFile(archive, dockerArchive(image, [ref]))
  await d.dockerOk(['load', '-i', archive])
  await d.dockerOk(['logout', reg.host])
  const started = Date.now()
  // Capped: docker retries errors it thinks transient for ~50 s (5+10+15+20 s backoff) before giving up.
  const anon = await d.docker(['push', ref], { timeoutMs: 20_000 })
  const ms = Date.now() - started
  t.not(anon.code, 0, 'push without login fails')
  t.match(anon.stderr + anon.stdout, /unauthorized|authentication required|no basic auth credentials|denied|killed/i, 'because it is unauthorized')
  // A failed token fetch would be retried by docker for ~50 s; a registry UNAUTHORIZED is final.
  t.ok(ms < 15_000, `the refusal is final, not retried (${ms} ms)`)
  t.equal((await fetchManifest(reg, 'docker/private', '1', 'HEAD')).status, 404, 'nothing was tagged')

  const wrong = await d.docker(['login', '-u', reg.credentials.username, '--password-stdin', reg.host], { input: 'not-the-password' })
  t.not(wrong.code, 0, 'login with a wrong password fails')
  const login = await d.login(reg.host, reg.credentials)
  t.match(login.stdout, /Login Succeeded/, 'login with the right password succeeds')
  const push = await d.dockerOk(['push', ref])
  t.equal((await fetchManifest(reg, 'docker/private', '1', 'HEAD')).digest, pushedDigest(push.stdout), 'and the push goes through')
})
