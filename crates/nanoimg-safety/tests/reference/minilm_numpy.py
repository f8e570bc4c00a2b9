"""An independent NumPy implementation of all-MiniLM-L6-v2 (BertModel + masked mean pooling),
written from the BERT paper and the checkpoint's names, used once to produce the reference values
in tests/semantic.rs. Not run by CI. Needs numpy, tokenizers and safetensors:

    python3 minilm_numpy.py .cache/safety-models/all-minilm-l6-v2 "a nude woman"
"""
import numpy as np, json, sys
from tokenizers import Tokenizer
from safetensors.numpy import load_file
d=sys.argv[1].rstrip('/')+'/'
W=load_file(d+'model.safetensors'); tok=Tokenizer.from_file(d+'tokenizer.json'); tok.no_padding()
import math
def ln(x,w,b,eps=1e-12):
    m=x.mean(-1,keepdims=True); v=((x-m)**2).mean(-1,keepdims=True); return (x-m)/np.sqrt(v+eps)*w+b
vect_erf=np.vectorize(math.erf)
def gelu(x): return 0.5*x*(1+vect_erf(x/np.sqrt(2)))
def emb(s):
    ids=np.array(tok.encode(s).ids); n=len(ids)
    x=W['embeddings.word_embeddings.weight'][ids]+W['embeddings.position_embeddings.weight'][:n]+W['embeddings.token_type_embeddings.weight'][0]
    x=ln(x,W['embeddings.LayerNorm.weight'],W['embeddings.LayerNorm.bias'])
    for i in range(6):
        p=f'encoder.layer.{i}.'
        L=lambda name,h: h@W[p+name+'.weight'].T+W[p+name+'.bias']
        q=L('attention.self.query',x).reshape(n,12,32).transpose(1,0,2)
        k=L('attention.self.key',x).reshape(n,12,32).transpose(1,0,2)
        v=L('attention.self.value',x).reshape(n,12,32).transpose(1,0,2)
        s_=q@k.transpose(0,2,1)/np.sqrt(32); s_=np.exp(s_-s_.max(-1,keepdims=True)); s_/=s_.sum(-1,keepdims=True)
        a=(s_@v).transpose(1,0,2).reshape(n,384)
        a=ln(L('attention.output.dense',a)+x,W[p+'attention.output.LayerNorm.weight'],W[p+'attention.output.LayerNorm.bias'])
        h=gelu(L('intermediate.dense',a))
        x=ln(L('output.dense',h)+a,W[p+'output.LayerNorm.weight'],W[p+'output.LayerNorm.bias'])
    m=x.mean(0); return m/np.linalg.norm(m)
for s in sys.argv[2:]:
    e=emb(s); print(s, [round(float(t),5) for t in e[:4]])
a,b,c,d2=[emb(s) for s in ["a nude woman","naked lady","a red apple","a woman in a winter coat"]]
print(a@b,a@c,a@d2)
