# Independent numpy implementation of all-MiniLM-L6-v2 (BERT + mean pooling + L2 norm), for test reference values.
import json, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
d = sys.argv[1]
W = load_file(f"{d}/model.safetensors")
cfg = json.load(open(f"{d}/config.json"))
tok = Tokenizer.from_file(f"{d}/tokenizer.json"); tok.no_padding()
def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x-m)**2).mean(-1, keepdims=True)
    return (x-m)/np.sqrt(v+eps)*g + b
def gelu(x):
    from math import erf
    return 0.5*x*(1+np.vectorize(erf)(x/np.sqrt(2)))
def embed(text):
    ids = np.array(tok.encode(text).ids)
    p = lambda n: W[n] if n in W else W["bert."+n]
    x = p("embeddings.word_embeddings.weight")[ids] + p("embeddings.position_embeddings.weight")[:len(ids)] + p("embeddings.token_type_embeddings.weight")[0]
    x = ln(x, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"))
    H = cfg["num_attention_heads"]; D = x.shape[1]//H
    for l in range(cfg["num_hidden_layers"]):
        q = lambda n: p(f"encoder.layer.{l}.{n}")
        Q = x@q("attention.self.query.weight").T+q("attention.self.query.bias")
        K = x@q("attention.self.key.weight").T+q("attention.self.key.bias")
        V = x@q("attention.self.value.weight").T+q("attention.self.value.bias")
        out = np.zeros_like(x)
        for h in range(H):
            s = slice(h*D,(h+1)*D)
            a = Q[:,s]@K[:,s].T/np.sqrt(D); a = np.exp(a-a.max(-1,keepdims=True)); a/=a.sum(-1,keepdims=True)
            out[:,s] = a@V[:,s]
        x = ln(out@q("attention.output.dense.weight").T+q("attention.output.dense.bias")+x, q("attention.output.LayerNorm.weight"), q("attention.output.LayerNorm.bias"))
        h1 = gelu(x@q("intermediate.dense.weight").T+q("intermediate.dense.bias"))
        x = ln(h1@q("output.dense.weight").T+q("output.dense.bias")+x, q("output.LayerNorm.weight"), q("output.LayerNorm.bias"))
    m = x.mean(0); return m/np.linalg.norm(m)
v = embed(sys.argv[2]); print(len(v), [round(float(a),5) for a in v[:6]])
