"""Label examples of task rte with its models on a Triton server (client-side greedy decoding).

    tritonserver --model-repository ../../models
    python client.py '{"sentence1": "...", "sentence2": "..."}' [--url localhost:8001]
    python client.py --local '...'    # ONNX deployments only: the repository's model.onnx files, no server

Needs `pip install hyperexport 'tritonclient[grpc]'` (hyperexport for the tokenizer and the loop).
"""

import argparse
import json
from pathlib import Path

from hyperexport.deploy import onnxruntime_model_infer, run_deployed, triton_model_infer

HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("example", help="a JSON object of the task's fields")
parser.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint")
parser.add_argument("--local", action="store_true", help="run the ONNX models with ONNX Runtime instead")
args = parser.parse_args()
infer = onnxruntime_model_infer(HERE.parents[1] / "models") if args.local else triton_model_infer(args.url)
print(json.dumps(run_deployed(HERE, [json.loads(args.example)], infer), indent=2))
