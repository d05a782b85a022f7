"""OpenGL offscreen backend (moderngl on EGL; Mesa llvmpipe on machines without a GPU).

Takes the same camera-frame triangles as the numpy backend (``camera_triangles`` + near clipping is
left to OpenGL) and writes colour, camera-space z, normals and instance ids in one pass into float32
targets. The projection maps pixel centres exactly as K does (OpenCV convention).
"""
from __future__ import annotations

import numpy as np

from .camera import View
from .raster import Frame, Instance, camera_triangles

VERTEX = """
#version 330
uniform mat4 proj;
in vec3 in_pos; in vec3 in_normal; in vec2 in_uv;
out vec3 v_pos; out vec3 v_normal; out vec2 v_uv;
void main() { v_pos = in_pos; v_normal = in_normal; v_uv = in_uv; gl_Position = proj * vec4(in_pos, 1.0); }
"""
FRAGMENT = """
#version 330
uniform sampler2D tex; uniform vec3 light_dir; uniform float ambient; uniform float diffuse; uniform float inst_id;
in vec3 v_pos; in vec3 v_normal; in vec2 v_uv;
layout(location=0) out vec4 out_color; layout(location=1) out vec4 out_depth;
layout(location=2) out vec4 out_normal;
void main() {
    vec3 n = normalize(v_normal);
    if (dot(n, v_pos) > 0.0) n = -n;
    vec3 base = texelFetch(tex, ivec2(floor(fract(v_uv) * vec2(textureSize(tex, 0)))), 0).rgb;
    float lam = max(dot(n, -light_dir), 0.0);
    out_color = vec4(base * (ambient + diffuse * lam), 1.0);
    out_depth = vec4(v_pos.z, inst_id, 0.0, 1.0);
    out_normal = vec4(n, 1.0);
}
"""


def projection(K: np.ndarray, h: int, w: int, near: float, far: float) -> np.ndarray:
    """OpenGL clip-space matrix whose NDC maps pixel centres exactly like K (image row 0 at the top)."""
    P = np.zeros((4, 4))
    P[0, 0] = 2 * K[0, 0] / w
    P[0, 1] = 2 * K[0, 1] / w
    P[0, 2] = 2 * (K[0, 2] + 0.5) / w - 1
    P[1, 1] = -2 * K[1, 1] / h
    P[1, 2] = 1 - 2 * (K[1, 2] + 0.5) / h
    P[2, 2] = (far + near) / (far - near)
    P[2, 3] = -2 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


class GLRenderer:
    """One EGL context; framebuffers are cached per resolution."""

    def __init__(self) -> None:
        import moderngl

        self.mgl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.prog = self.ctx.program(vertex_shader=VERTEX, fragment_shader=FRAGMENT)
        self._fbos: dict[tuple[int, int], object] = {}

    def _fbo(self, h: int, w: int):
        if (h, w) not in self._fbos:
            targets = [self.ctx.texture((w, h), 4, dtype="f4") for _ in range(3)]
            self._fbos[(h, w)] = self.ctx.framebuffer(color_attachments=targets,
                                                      depth_attachment=self.ctx.depth_renderbuffer((w, h)))
        return self._fbos[(h, w)]

    def render(self, instances: list[Instance], view: View) -> Frame:
        h, w = view.height, view.width
        fbo = self._fbo(h, w)
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(self.mgl.DEPTH_TEST)
        self.ctx.disable(self.mgl.CULL_FACE)
        self.prog["proj"].write(projection(view.K, h, w, view.near, view.far).T.astype("f4").tobytes())
        self.prog["light_dir"].value = tuple(view.light_dir)
        self.prog["ambient"].value = view.ambient
        self.prog["diffuse"].value = view.diffuse
        attrs, owner = camera_triangles(instances, view)
        for k, inst in enumerate(instances):
            data = attrs[owner == k].astype("f4")
            vbo = self.ctx.buffer(data.tobytes())
            vao = self.ctx.vertex_array(self.prog, [(vbo, "3f 3f 2f", "in_pos", "in_normal", "in_uv")])
            tex = self.ctx.texture((inst.texture.shape[1], inst.texture.shape[0]), 3,
                                   np.ascontiguousarray(inst.texture, np.uint8).tobytes())
            tex.filter = (self.mgl.NEAREST, self.mgl.NEAREST)
            tex.use(0)
            self.prog["tex"].value = 0
            self.prog["inst_id"].value = float(inst.instance_id)
            vao.render(self.mgl.TRIANGLES)
            for obj in (vao, vbo, tex):
                obj.release()

        def read(i: int) -> np.ndarray:
            buf = np.frombuffer(fbo.read(components=4, attachment=i, dtype="f4"), np.float32)
            return buf.reshape(h, w, 4)[::-1]

        col, dep, nrm = read(0), read(1), read(2)
        hit = col[..., 3] > 0.5
        rgb = np.where(hit[..., None], col[..., :3], np.asarray(view.background, np.float32))
        return Frame(np.clip(rgb, 0, 1).astype(np.float32), np.where(hit, dep[..., 0], 0).astype(np.float32),
                     np.where(hit[..., None], nrm[..., :3], 0).astype(np.float32),
                     np.where(hit, np.rint(dep[..., 1]), 0).astype(np.int32))

    def close(self) -> None:
        self.ctx.release()
